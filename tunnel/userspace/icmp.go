package userspace

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// ICMP messages a peer sends the stack, judged before the stack sees
// them. An ICMP error names a connection of the stack's by the packet it
// quotes (our address to the remote end's), and gVisor believes it on
// addresses and ports alone: a "fragmentation needed" shrinks the
// connection's segments, a "port unreachable" aborts it while in its
// handshake. WireGuard vouches only that a packet's source is among the
// AllowedIPs of the peer that sent it; so that no peer can harm the
// stack's connections to another, Write takes an error only when its
// source and the quoted packet's destination are routed to the same
// peer (routes.go): the remote end itself, or a router behind its peer.

// icmp4 is ip's ICMP message, as far as ip holds it: nil when ip carries
// no ICMP header (not ICMP, or a later fragment: fragments may not
// overlap — gVisor abandons a datagram whose fragments do —, so the first
// alone brings the ICMP header and an error's quoted header); false when
// ip is too short for the ICMP header it announces, which the stack would
// drop too.
func icmp4(ip header.IPv4) (header.ICMPv4, bool) {
	if ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) || ip.FragmentOffset() != 0 {
		return nil, true
	}
	hdrLen := int(ip.HeaderLength())
	end := min(len(ip), int(ip.TotalLength()))
	if hdrLen < header.IPv4MinimumSize || end < hdrLen+header.ICMPv4MinimumSize {
		return nil, false
	}
	return header.ICMPv4(ip[hdrLen:end]), true
}

// icmp6 is icmp4 for IPv6: the ICMPv6 message behind any extension
// headers, as the stack walks them; false for a header chain cut short,
// which the stack drops, or which leaves a first fragment's ICMPv6 header
// for a later one (RFC 7112 lets us drop it).
func icmp6(ip header.IPv6) (header.ICMPv6, bool) {
	end := min(len(ip), header.IPv6MinimumSize+int(ip.PayloadLength()))
	switch ip.NextHeader() {
	case uint8(header.TCPProtocolNumber), uint8(header.UDPProtocolNumber):
		return nil, true
	case uint8(header.ICMPv6ProtocolNumber):
		return whole6(ip[header.IPv6MinimumSize:end])
	}
	it := header.MakeIPv6PayloadIterator(header.IPv6ExtensionHeaderIdentifier(ip.NextHeader()), buffer.MakeWithData(ip[header.IPv6MinimumSize:end]))
	defer it.Release()
	fragmented := false
	for {
		ext, done, err := it.Next()
		if err != nil {
			return nil, false
		}
		if done {
			return nil, true
		}
		ext.Release()
		switch ext := ext.(type) {
		case header.IPv6FragmentExtHdr:
			if ext.FragmentOffset() != 0 {
				return nil, true // the first fragment brings the headers
			}
			if !ext.IsAtomic() {
				if fragmented {
					return nil, false // a fragment of a fragment
				}
				fragmented = true
			}
		case header.IPv6RawPayloadHeader:
			if ext.Identifier != header.IPv6ExtensionHeaderIdentifier(header.ICMPv6ProtocolNumber) {
				return nil, true
			}
			return whole6(ip[it.HeaderOffset():end])
		}
	}
}

// whole6 is msg, if it holds an ICMPv6 header.
func whole6(msg []byte) (header.ICMPv6, bool) {
	if len(msg) < header.ICMPv6MinimumSize {
		return nil, false
	}
	return header.ICMPv6(msg), true
}

// admitICMP4 reports whether the stack may have ip, whose ICMP message
// is msg: not a path MTU under IP's floor (pmtu.go), and an error only
// from the route to the connection it names.
func (d *device) admitICMP4(ip header.IPv4, msg header.ICMPv4) bool {
	if lowersPathMTU4(msg) {
		return false
	}
	switch msg.Type() {
	case header.ICMPv4DstUnreachable, header.ICMPv4SrcQuench, header.ICMPv4Redirect, header.ICMPv4TimeExceeded, header.ICMPv4ParamProblem:
		return d.fromRoute(netip.AddrFrom4([4]byte(ip[12:16])), msg[header.ICMPv4MinimumSize:])
	}
	return true
}

// admitICMP6 is admitICMP4 for ICMPv6, whose error messages are types 0
// to 127 (RFC 4443).
func (d *device) admitICMP6(ip header.IPv6, msg header.ICMPv6) bool {
	if lowersPathMTU6(msg) {
		return false
	}
	if msg.Type() < 128 {
		return d.fromRoute(netip.AddrFrom16([16]byte(ip[8:24])), msg[header.ICMPv6MinimumSize:])
	}
	return true
}

// fromRoute reports whether an ICMP error from src that quotes quoted (an
// IP header of src's family, as the stack reads it) comes from the peer
// the quoted packet went to; if not, it is counted in ICMPRefused. A
// quote too short to name a destination names no connection the stack
// would find either.
func (d *device) fromRoute(src netip.Addr, quoted []byte) bool {
	var dst netip.Addr
	switch {
	case src.Is4() && len(quoted) >= header.IPv4MinimumSize:
		dst = netip.AddrFrom4([4]byte(quoted[16:20]))
	case src.Is6() && len(quoted) >= header.IPv6MinimumSize:
		dst = netip.AddrFrom16([16]byte(quoted[24:40]))
	}
	if dst.IsValid() && d.routes.Load().sameRoute(src, dst) {
		return true
	}
	d.ICMPRefused.Add(1)
	return false
}
