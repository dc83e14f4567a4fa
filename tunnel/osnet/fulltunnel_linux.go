package osnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Full tunnel, as wg-quick does it. A peer's AllowedIPs of 0.0.0.0/0 or
// ::/0 (Table = auto) sends everything into the tunnel except punchtun's
// own traffic: the default route goes into a table of its own, numbered
// as the mark every punchtun socket carries, and two rules per family
// decide —
//
//	lookup main suppress_prefixlength 0   every route of the main table but its default
//	not fwmark MARK lookup MARK           the rest, unless it is ours, into the tunnel
//
// — so the shared socket, the birthday sockets and the TCP connections to
// the rendezvous (all marked) keep their real route, and punching, relay
// and TCP fallback work as before. net.ipv4.conf.all.src_valid_mark lets
// the marked replies pass reverse-path filtering. Down removes the rules
// and restores the sysctl; the table's route goes with the interface.

// firstFullTunnelMark is where the search for a free table starts, as in
// wg-quick.
const firstFullTunnelMark = 51820

// FreeTable returns the first table number from firstFullTunnelMark on
// that has no routes in either family and no rule that uses it.
func FreeTable() (uint32, error) {
	rules, err := netlink.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return 0, fmt.Errorf("list routing rules: %w", err)
	}
next:
	for t := uint32(firstFullTunnelMark); t < firstFullTunnelMark+1000; t++ {
		for _, r := range rules {
			if r.Table == int(t) || r.Mark == t {
				continue next
			}
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: int(t)}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return 0, fmt.Errorf("list routes of table %d: %w", t, err)
		}
		if len(routes) == 0 {
			return t, nil
		}
	}
	return 0, errors.New("no free routing table for the full tunnel")
}

// FullTunnel: see Interface.
func (l *netlinkInterface) FullTunnel(mark uint32, defaults []netip.Prefix) (func() error, error) {
	iface := l.name
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return nil, err
	}
	var added []*netlink.Rule
	var restore []func() error
	undo := func() error {
		var errs []error
		for i := len(added) - 1; i >= 0; i-- {
			if err := netlink.RuleDel(added[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove rule %v: %w", added[i], err))
			}
		}
		for _, r := range restore {
			errs = append(errs, r())
		}
		return errors.Join(errs...)
	}
	for _, d := range defaults {
		family := netlink.FAMILY_V4
		if d.Addr().Is6() {
			family = netlink.FAMILY_V6
		} else {
			old, err := setSysctl("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1")
			if err != nil {
				undo()
				return nil, err
			}
			restore = append(restore, func() error { _, err := setSysctl("/proc/sys/net/ipv4/conf/all/src_valid_mark", old); return err })
		}
		if err := netlink.RouteReplace(linkRoute(link, d, Table(mark))); err != nil {
			undo()
			return nil, fmt.Errorf("add default route via %s in table %d: %w", iface, mark, err)
		}
		toTunnel := netlink.NewRule()
		toTunnel.Family, toTunnel.Mark, toTunnel.Invert, toTunnel.Table = family, mark, true, int(mark)
		mainFirst := netlink.NewRule()
		mainFirst.Family, mainFirst.Table, mainFirst.SuppressPrefixlen = family, unix.RT_TABLE_MAIN, 0
		// Added in this order, the kernel numbers the second before the
		// first: main's specific routes are looked at first.
		for _, r := range []*netlink.Rule{toTunnel, mainFirst} {
			if err := netlink.RuleAdd(r); err != nil {
				undo()
				return nil, fmt.Errorf("add routing rule %v: %w", r, err)
			}
			added = append(added, r)
		}
	}
	return undo, nil
}

// setSysctl writes value to a /proc/sys file and returns what was there.
func setSysctl(path, value string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	old := strings.TrimSpace(string(b))
	if old == value {
		return old, nil
	}
	return old, os.WriteFile(path, []byte(value), 0o644)
}
