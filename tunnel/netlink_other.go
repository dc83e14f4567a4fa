//go:build !linux

package tunnel

import (
	"fmt"
	"net/netip"
	"runtime"
)

// errNoConfigure names what punchtun lacks here: wireguard-go's tun and
// ipc packages create the interface and serve wg, but giving it its
// addresses, MTU and routes is done with netlink, which only Linux has.
var errNoConfigure = fmt.Errorf("setting the interface's addresses, MTU and routes is only implemented on Linux (netlink), not on %s", runtime.GOOS)

// canConfigure fails before anything is created: Up calls it first.
func canConfigure() error { return errNoConfigure }

func configureInterface(name string, mtu int, addrs, routes []netip.Prefix, table routeTable) error {
	return errNoConfigure
}

func pathMTU(dst netip.Addr, mark uint32) int { return 0 }

func setRouteMTU(iface string, prefixes []netip.Prefix, mtu int, table routeTable) error {
	return errNoConfigure
}

func reconfigureInterface(name string, oldMTU, mtu int, oldAddrs, addrs, oldRoutes, routes []netip.Prefix, table routeTable) error {
	return errNoConfigure
}
