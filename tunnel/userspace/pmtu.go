package userspace

import (
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// A router that cannot forward a packet unfragmented tells its sender
// the MTU of its next hop (ICMPv4 "fragmentation needed", ICMPv6 "packet
// too big"), and gVisor's TCP shrinks its segments to fit. Nothing
// authenticates the message, and it names the connection by addresses
// and ports alone: any peer can send one naming the stack's connection
// to another peer. gVisor takes an MTU under IP's minimum (68, 1280)
// for 0 and then sends each byte in a segment of its own (65,537
// packets for 64 KiB). Linux never goes under 552 bytes for IPv4
// (net.ipv4.route.min_pmtu) nor 1280 for IPv6 (RFC 8201): Write drops
// what would take the stack under those.
const (
	minPathMTU4 = 552
	minPathMTU6 = header.IPv6MinimumMTU
)

// lowersPathMTU4 reports whether ip is, or is the fragment carrying the
// header of, a "fragmentation needed" under minPathMTU4; or an ICMP
// message too short to have a header, which the stack would drop too.
// Later fragments need no look: fragments may not overlap, so the
// first alone brings the ICMP header.
func lowersPathMTU4(ip header.IPv4) bool {
	if ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) || ip.FragmentOffset() != 0 {
		return false
	}
	hdrLen := int(ip.HeaderLength())
	end := min(len(ip), int(ip.TotalLength()))
	if hdrLen < header.IPv4MinimumSize || end < hdrLen+header.ICMPv4MinimumSize {
		return true
	}
	icmp := header.ICMPv4(ip[hdrLen:end])
	return icmp.Type() == header.ICMPv4DstUnreachable && icmp.Code() == header.ICMPv4FragmentationNeeded && icmp.MTU() < minPathMTU4
}

// lowersPathMTU6 is lowersPathMTU4 for IPv6: "packet too big" under
// minPathMTU6, behind any extension headers, as the stack walks them;
// or a header chain cut short, which the stack drops, or which leaves a
// first fragment's ICMPv6 header for a later one (RFC 7112 lets us drop
// it).
func lowersPathMTU6(ip header.IPv6) bool {
	end := min(len(ip), header.IPv6MinimumSize+int(ip.PayloadLength()))
	switch ip.NextHeader() {
	case uint8(header.TCPProtocolNumber), uint8(header.UDPProtocolNumber):
		return false
	case uint8(header.ICMPv6ProtocolNumber):
		return tooBig6(header.ICMPv6(ip[header.IPv6MinimumSize:end]))
	}
	it := header.MakeIPv6PayloadIterator(header.IPv6ExtensionHeaderIdentifier(ip.NextHeader()), buffer.MakeWithData(ip[header.IPv6MinimumSize:end]))
	defer it.Release()
	fragmented := false
	for {
		ext, done, err := it.Next()
		if err != nil {
			return true
		}
		if done {
			return false
		}
		ext.Release()
		switch ext := ext.(type) {
		case header.IPv6FragmentExtHdr:
			if ext.FragmentOffset() != 0 {
				return false // the first fragment brings the headers
			}
			if !ext.IsAtomic() {
				if fragmented {
					return true // a fragment of a fragment
				}
				fragmented = true
			}
		case header.IPv6RawPayloadHeader:
			return ext.Identifier == header.IPv6ExtensionHeaderIdentifier(header.ICMPv6ProtocolNumber) && tooBig6(header.ICMPv6(ip[it.HeaderOffset():end]))
		}
	}
}

// tooBig6 reports whether icmp is a "packet too big" under minPathMTU6,
// or too short to tell.
func tooBig6(icmp header.ICMPv6) bool {
	if len(icmp) < header.ICMPv6MinimumSize {
		return true
	}
	return icmp.Type() == header.ICMPv6PacketTooBig && icmp.MTU() < minPathMTU6
}
