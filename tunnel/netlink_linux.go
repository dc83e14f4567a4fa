package tunnel

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// canConfigure says whether configureInterface works on this platform: on
// Linux it does (netlink_other.go says what is missing elsewhere).
func canConfigure() error { return nil }

// configureInterface gives the TUN its addresses, MTU and routes, and brings
// it up, through netlink.
func configureInterface(name string, mtu int, addrs, routes []netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set MTU %d on %s: %w", mtu, name, err)
	}
	for _, a := range addrs {
		na := &netlink.Addr{IPNet: ipNet(a)}
		if a.Addr().Is6() {
			// The tunnel is point to point: duplicate address detection
			// would only delay the address by a second or two.
			na.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, na); err != nil {
			return fmt.Errorf("add address %s to %s: %w", a, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	for _, r := range routes {
		rt := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(r.Masked()), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(rt); err != nil {
			return fmt.Errorf("add route %s via %s: %w", r, name, err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
