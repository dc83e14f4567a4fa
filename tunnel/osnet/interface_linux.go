package osnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkInterface is Interface on Linux: every call looks the interface up by
// name, and talks netlink (interface_other.go says what is missing elsewhere).
type netlinkInterface struct {
	name  string
	table Table
}

// Open returns the Interface of the interface name, routed in table; the
// interface need not exist yet.
func Open(name string, table Table) (Interface, error) {
	return &netlinkInterface{name: name, table: table}, nil
}

// Configure gives the TUN its addresses, MTU and routes, and brings it up.
func (l *netlinkInterface) Configure(cfg Config) error {
	name := l.name
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
		return fmt.Errorf("set MTU %d on %s: %w", cfg.MTU, name, err)
	}
	for _, a := range cfg.Addresses {
		if err := addAddress(link, a); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return addRoutes(link, cfg.Routes, l.table)
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
func linkRoute(link netlink.Link, p netip.Prefix, table Table) *netlink.Route {
	return &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(p.Masked()), Scope: netlink.SCOPE_LINK, Table: int(table)}
}

func addRoutes(link netlink.Link, routes []netip.Prefix, table Table) error {
	if table == TableOff {
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

// PathMTU returns the path MTU the kernel learned for dst from ICMP
// fragmentation-needed (Packet Too Big), or one set on its route; 0 if
// there is none, and the path takes what the links take.
// mark is our sockets' FwMark: the route they take, not the tunnel's.
func PathMTU(dst netip.Addr, mark uint32) int {
	routes, err := netlink.RouteGetWithOptions(dst.Unmap().AsSlice(), &netlink.RouteGetOptions{Mark: mark})
	if err != nil || len(routes) == 0 {
		return 0
	}
	return routes[0].MTU
}

// SetRouteMTU: see Interface.
func (l *netlinkInterface) SetRouteMTU(prefixes []netip.Prefix, mtu int) error {
	link, err := netlink.LinkByName(l.name)
	if err != nil || l.table == TableOff {
		return err
	}
	var errs []error
	for _, p := range prefixes {
		if p.Bits() == 0 || p.Addr().Is6() && mtu != 0 && mtu < 1280 {
			continue
		}
		rt := linkRoute(link, p, l.table)
		rt.MTU = mtu
		errs = append(errs, netlink.RouteReplace(rt))
	}
	return errors.Join(errs...)
}

// Reconfigure changes a running interface from one config's addresses,
// routes and MTU to another's, touching only what differs.
func (l *netlinkInterface) Reconfigure(old, cfg Config) error {
	name, table := l.name, l.table
	oldMTU, mtu, oldAddrs, addrs, oldRoutes, routes := old.MTU, cfg.MTU, old.Addresses, cfg.Addresses, old.Routes, cfg.Routes
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
		if !slices.Contains(routes, r) && table != TableOff {
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
