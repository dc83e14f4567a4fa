//go:build !linux

package osnet

import (
	"fmt"
	"net/netip"
	"runtime"
)

// errNoConfigure names what punchtun lacks here: wireguard-go's tun and
// ipc packages create the interface and serve wg, but giving it its
// addresses, MTU and routes is done with netlink, which only Linux has.
var errNoConfigure = fmt.Errorf("setting the interface's addresses, MTU and routes is only implemented on Linux (netlink), not on %s", runtime.GOOS)

// Open fails before anything is created: Up calls it first.
func Open(name string, table Table) (Interface, error) { return nil, errNoConfigure }

// PathMTU knows no path MTUs here.
func PathMTU(dst netip.Addr, mark uint32) int { return 0 }
