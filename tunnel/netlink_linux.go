package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// canConfigure says whether configureInterface works on this platform: on
// Linux it does (netlink_other.go says what is missing elsewhere).
func canConfigure() error { return nil }

// configureInterface gives the TUN its addresses, MTU and routes, and brings
// it up, through netlink.
func configureInterface(name string, mtu int, addrs, routes []netip.Prefix, table routeTable) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set MTU %d on %s: %w", mtu, name, err)
	}
	for _, a := range addrs {
		if err := addAddress(link, a); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return addRoutes(link, routes, table)
}

// addAddress gives link the address a.
func addAddress(link netlink.Link, a netip.Prefix) error {
	na := &netlink.Addr{IPNet: ipNet(a)}
	if a.Addr().Is6() {
		// The tunnel is point to point: duplicate address detection
		// would only delay the address by a second or two.
		na.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(link, na); err != nil {
		return fmt.Errorf("add address %s to %s: %w", a, link.Attrs().Name, err)
	}
	return nil
}

// linkRoute is the route of prefix p into link in table.
func linkRoute(link netlink.Link, p netip.Prefix, table routeTable) *netlink.Route {
	return &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(p.Masked()), Scope: netlink.SCOPE_LINK, Table: int(table)}
}

func addRoutes(link netlink.Link, routes []netip.Prefix, table routeTable) error {
	if table == tableOff {
		return nil
	}
	for _, r := range routes {
		if err := netlink.RouteReplace(linkRoute(link, r, table)); err != nil {
			return fmt.Errorf("add route %s via %s: %w", r, link.Attrs().Name, err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// pathMTU returns the path MTU the kernel learned for dst from ICMP
// fragmentation-needed (Packet Too Big), or one set on its route; 0 if
// there is none, and the path takes what the links take.
// mark is our sockets' FwMark: the route they take, not the tunnel's.
func pathMTU(dst netip.Addr, mark uint32) int {
	routes, err := netlink.RouteGetWithOptions(dst.Unmap().AsSlice(), &netlink.RouteGetOptions{Mark: mark})
	if err != nil || len(routes) == 0 {
		return 0
	}
	return routes[0].MTU
}

// setRouteMTU routes prefixes into iface with an MTU of mtu (0: the
// link's), so that this host's senders size their packets to fit a
// peer's path, and routers forwarding into the tunnel answer bigger ones
// with ICMP. An IPv6 route cannot go below 1280: IPv6 prefixes are left
// to fragmentation then.
func setRouteMTU(iface string, prefixes []netip.Prefix, mtu int, table routeTable) error {
	link, err := netlink.LinkByName(iface)
	if err != nil || table == tableOff {
		return err
	}
	var errs []error
	for _, p := range prefixes {
		if p.Bits() == 0 || p.Addr().Is6() && mtu != 0 && mtu < 1280 {
			continue
		}
		rt := linkRoute(link, p, table)
		rt.MTU = mtu
		errs = append(errs, netlink.RouteReplace(rt))
	}
	return errors.Join(errs...)
}

// reconfigureInterface changes a running interface from one config's
// addresses, routes and MTU to another's, touching only what differs.
func reconfigureInterface(name string, oldMTU, mtu int, oldAddrs, addrs, oldRoutes, routes []netip.Prefix, table routeTable) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", name, err)
	}
	if mtu != oldMTU {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", mtu, name, err)
		}
	}
	for _, a := range addrs {
		if !slices.Contains(oldAddrs, a) {
			if err := addAddress(link, a); err != nil {
				return err
			}
		}
	}
	var added []netip.Prefix
	for _, r := range routes {
		if !slices.Contains(oldRoutes, r) {
			added = append(added, r)
		}
	}
	if err := addRoutes(link, added, table); err != nil {
		return err
	}
	var errs []error
	for _, r := range oldRoutes {
		if !slices.Contains(routes, r) && table != tableOff {
			if err := netlink.RouteDel(linkRoute(link, r, table)); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("remove route %s: %w", r, err))
			}
		}
	}
	for _, a := range oldAddrs {
		if !slices.Contains(addrs, a) {
			if err := netlink.AddrDel(link, &netlink.Addr{IPNet: ipNet(a)}); err != nil {
				errs = append(errs, fmt.Errorf("remove address %s: %w", a, err))
			}
		}
	}
	return errors.Join(errs...)
}
