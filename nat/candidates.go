package nat

import (
	"net"
	"net/netip"
	"slices"
)

// LocalCandidates lists this host's addresses with port: the candidates a
// peer on the same LAN can reach it at. It leaves out loopback, link-local
// addresses, interfaces that are down, point-to-point links (tunnels), the
// interface named skipIface (the tunnel itself) and any address inside skip
// (the tunnel's own prefixes), which would lead a peer into the tunnel it
// is trying to build. IPv4 comes first: it is what a shared LAN most often
// has.
func LocalCandidates(port uint16, skipIface string, skip []netip.Prefix) []netip.AddrPort {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, ifi := range ifaces {
		// Point-to-point links are tunnels (TUN devices, WireGuard, other
		// VPNs): a path through one would carry this tunnel inside another,
		// or inside itself, and as a private address it would even beat
		// the public path.
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&(net.FlagLoopback|net.FlagPointToPoint) != 0 || ifi.Name == skipIface {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if !usable(ip) || slices.ContainsFunc(skip, func(p netip.Prefix) bool { return p.Contains(ip) }) {
				continue
			}
			out = append(out, netip.AddrPortFrom(ip, port))
		}
	}
	slices.SortStableFunc(out, func(a, b netip.AddrPort) int {
		switch {
		case a.Addr().Is4() && !b.Addr().Is4():
			return -1
		case !a.Addr().Is4() && b.Addr().Is4():
			return 1
		}
		return 0
	})
	return out
}

func usable(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsMulticast() && !ip.IsUnspecified()
}

// PathKind says what kind of path two peers talk over.
type PathKind int

const (
	PathNone   PathKind = iota // no confirmed path yet
	PathDirect                 // over public addresses, through the NATs
	PathLAN                    // over private addresses of a shared LAN
)

func (k PathKind) String() string {
	switch k {
	case PathDirect:
		return "direct"
	case PathLAN:
		return "lan"
	}
	return "connecting"
}

// KindOf classifies a confirmed path by its address: a private or
// link-local address can only be reached on a LAN the two peers share.
func KindOf(ap netip.AddrPort) PathKind {
	a := ap.Addr()
	switch {
	case !a.IsValid():
		return PathNone
	case a.IsPrivate() || a.IsLinkLocalUnicast():
		return PathLAN
	}
	return PathDirect
}
