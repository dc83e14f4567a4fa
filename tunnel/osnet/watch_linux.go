package osnet

import (
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
)

// WatchNetwork tells changed (without blocking: one pending signal is
// enough) whenever the host gains or loses an address or a default route,
// on any interface but the tunnel's own, until done is closed. That is how
// a laptop that moved to another network (or woke up on one) notices at
// once, instead of after its peers fall silent. Refreshes of an address it
// already has (IPv6 router advertisements renew lifetimes every few
// minutes) and routes other than default ones (a container bridge coming
// up) are not changes that move us.
//
// A subscription that fails, or that the kernel ends, is logged and made
// again (backing off to a minute), with a change signalled in case one
// was missed meanwhile. It returns when done is closed.
func WatchNetwork(log *slog.Logger, iface string, done <-chan struct{}, changed chan<- struct{}) {
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	backoff := time.Second
	for first := true; ; first = false {
		if !first {
			signal() // something may have changed unseen
		}
		err := watchOnce(iface, done, signal, func() { backoff = time.Second })
		select {
		case <-done:
			return
		default:
		}
		log.Warn("network watch failed: retrying; meanwhile a move to another network is noticed when peers fall silent",
			"err", err, "retry_in", backoff)
		select {
		case <-done:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// watchOnce subscribes to address and route changes and signals the ones
// that move us, until done is closed or the subscription ends; up is
// called once it runs.
func watchOnce(iface string, done <-chan struct{}, signal, up func()) error {
	own := -1
	if ifi, err := net.InterfaceByName(iface); err == nil {
		own = ifi.Index
	}
	list, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	have := map[netip.Prefix]bool{}
	for _, a := range list {
		if p, ok := prefixOf(a.IPNet); ok {
			have[p] = true
		}
	}
	// The subscriptions end when stop closes: on done, or when this
	// returns for the other's failure.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-done:
		case <-stop:
		}
	}()
	failed := make(chan error, 2)
	onErr := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	addrs := make(chan netlink.AddrUpdate, 16)
	routes := make(chan netlink.RouteUpdate, 16)
	if err := netlink.AddrSubscribeWithOptions(addrs, stop, netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return err
	}
	if err := netlink.RouteSubscribeWithOptions(routes, stop, netlink.RouteSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return err
	}
	up()
	for {
		select {
		case <-done:
			return nil
		case err := <-failed:
			return err
		case u, ok := <-addrs:
			if !ok {
				return errSubscriptionEnded
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
				return errSubscriptionEnded
			}
			if u.LinkIndex != own && isDefaultRoute(u.Dst) {
				signal()
			}
		}
	}
}

var errSubscriptionEnded = netlinkError("the kernel ended the netlink subscription")

type netlinkError string

func (e netlinkError) Error() string { return string(e) }

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
