//go:build !linux

package tunnel

import (
	"fmt"
	"net/netip"
	"runtime"
)

// configureInterface is implemented with netlink, on Linux only.
func configureInterface(name string, mtu int, addrs, routes []netip.Prefix) error {
	return fmt.Errorf("configuring interface addresses and routes is not implemented on %s yet (netlink is Linux-only)", runtime.GOOS)
}
