package tunnel

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// watchNetwork tells changed (without blocking: one pending signal is
// enough) whenever the host gains or loses an address or a default route,
// on any interface but the tunnel's own, until done is closed. That is how
// a laptop that moved to another network (or woke up on one) notices at
// once, instead of after its peers fall silent. Refreshes of an address it
// already has (IPv6 router advertisements renew lifetimes every few
// minutes) and routes other than default ones (a container bridge coming
// up) are not changes that move us.
func watchNetwork(iface string, done <-chan struct{}, changed chan<- struct{}) error {
	own := -1
	if ifi, err := net.InterfaceByName(iface); err == nil {
		own = ifi.Index
	}
	have := map[netip.Prefix]bool{}
	list, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, a := range list {
		if p, ok := prefixOf(a.IPNet); ok {
			have[p] = true
		}
	}
	addrs := make(chan netlink.AddrUpdate, 16)
	routes := make(chan netlink.RouteUpdate, 16)
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{}); err != nil {
		return err
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{}); err != nil {
		return err
	}
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	go func() {
		for addrs != nil || routes != nil {
			select {
			case <-done:
				return
			case u, ok := <-addrs:
				if !ok {
					addrs = nil
					continue
				}
				p, valid := prefixOf(&u.LinkAddress)
				if !valid || u.LinkIndex == own || have[p] == u.NewAddr {
					continue
				}
				if u.NewAddr {
					have[p] = true
				} else {
					delete(have, p)
				}
				signal()
			case u, ok := <-routes:
				if !ok {
					routes = nil
					continue
				}
				if u.LinkIndex != own && isDefaultRoute(u.Dst) {
					signal()
				}
			}
		}
	}()
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// isDefaultRoute: netlink gives a default route a nil or all-zero
// destination.
func isDefaultRoute(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}
