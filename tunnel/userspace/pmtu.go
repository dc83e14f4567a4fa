package userspace

import "gvisor.dev/gvisor/pkg/tcpip/header"

// A router that cannot forward a packet unfragmented tells its sender
// the MTU of its next hop (ICMPv4 "fragmentation needed", ICMPv6 "packet
// too big"), and gVisor's TCP shrinks its segments to fit. Nothing
// authenticates the message, and it names the connection by addresses
// and ports alone: only the peer the connection goes to may send one
// (icmp.go). gVisor takes an MTU under IP's minimum (68, 1280) for 0 and
// then sends each byte in a segment of its own (65,537 packets for 64
// KiB). Linux never goes under 552 bytes for IPv4
// (net.ipv4.route.min_pmtu) nor 1280 for IPv6 (RFC 8201): Write drops
// what would take the stack under those, whoever sends it.
const (
	minPathMTU4 = 552
	minPathMTU6 = header.IPv6MinimumMTU
)

// lowersPathMTU4 reports whether icmp is a "fragmentation needed" under
// minPathMTU4.
func lowersPathMTU4(icmp header.ICMPv4) bool {
	return icmp.Type() == header.ICMPv4DstUnreachable && icmp.Code() == header.ICMPv4FragmentationNeeded && icmp.MTU() < minPathMTU4
}

// lowersPathMTU6 reports whether icmp is a "packet too big" under
// minPathMTU6.
func lowersPathMTU6(icmp header.ICMPv6) bool {
	return icmp.Type() == header.ICMPv6PacketTooBig && icmp.MTU() < minPathMTU6
}
