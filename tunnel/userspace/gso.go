package userspace

import (
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The link tells gVisor's TCP that it segments (GSO, link.go), so TCP
// hands over one packet of up to 64 KiB where it would have built dozens:
// a "superpacket", its headers those of the first segment and its TCP
// checksum left partial (the pseudo-header's sum only, as a NIC that
// segments takes it). WireGuard and the peer want packets of the MTU with
// whole checksums: tcpSegmenter cuts them, as the NIC would.

// tcpSegmenter cuts one TCP superpacket into segments of at most mss
// bytes of data each, one segment a call to cut.
type tcpSegmenter struct {
	pkt    []byte // IP header, TCP header, data; nil: nothing left to cut
	v6     bool
	ipLen  int // bytes of IP header
	hdrLen int // bytes of IP and TCP header
	mss    int
	next   int // offset in pkt of the data the next segment carries
	count  int // segments cut so far
}

// start takes pkt to cut into segments of at most mss bytes of data
// (mss <= 0: one segment, whatever its size). pkt stays in use until the
// last segment is cut. It reports false for what is not a TCP packet with
// plain headers (IPv4, or IPv6 without extension headers): not cut.
func (s *tcpSegmenter) start(pkt []byte, mss int) bool {
	s.pkt = nil
	if len(pkt) < header.IPv4MinimumSize {
		return false
	}
	s.v6 = header.IPVersion(pkt) == header.IPv6Version
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		ip := header.IPv4(pkt)
		s.ipLen = int(ip.HeaderLength())
		if s.ipLen < header.IPv4MinimumSize || ip.Protocol() != uint8(header.TCPProtocolNumber) {
			return false
		}
	case header.IPv6Version:
		if len(pkt) < header.IPv6MinimumSize || header.IPv6(pkt).NextHeader() != uint8(header.TCPProtocolNumber) {
			return false
		}
		s.ipLen = header.IPv6MinimumSize
	default:
		return false
	}
	if len(pkt) < s.ipLen+header.TCPMinimumSize {
		return false
	}
	tcpLen := int(header.TCP(pkt[s.ipLen:]).DataOffset())
	if tcpLen < header.TCPMinimumSize || len(pkt) < s.ipLen+tcpLen {
		return false
	}
	if mss <= 0 {
		mss = len(pkt)
	}
	s.pkt, s.hdrLen, s.mss, s.next, s.count = pkt, s.ipLen+tcpLen, mss, s.ipLen+tcpLen, 0
	return true
}

// pending reports whether segments are left to cut.
func (s *tcpSegmenter) pending() bool { return s.pkt != nil }

// drop gives up the rest of the superpacket.
func (s *tcpSegmenter) drop() { s.pkt = nil }

// cut writes the next segment into dst and returns its length: the
// superpacket's headers with the lengths, the sequence number, the IPv4
// ID and both checksums made the segment's; FIN and PSH only on the last
// segment, CWR only on the first. 0: dst is too short for it.
func (s *tcpSegmenter) cut(dst []byte) int {
	end := min(s.next+s.mss, len(s.pkt))
	n := s.hdrLen + end - s.next
	if len(dst) < n {
		return 0
	}
	copy(dst, s.pkt[:s.hdrLen])
	copy(dst[s.hdrLen:], s.pkt[s.next:end])
	first, last := s.count == 0, end == len(s.pkt)

	tcp := header.TCP(dst[s.ipLen:n])
	tcp.SetSequenceNumber(tcp.SequenceNumber() + uint32(s.next-s.hdrLen))
	flags := tcp.Flags()
	if !last {
		flags &^= header.TCPFlagFin | header.TCPFlagPsh
	}
	if !first {
		flags &^= header.TCPFlagCwr
	}
	tcp.SetFlags(uint8(flags))
	tcp.SetChecksum(0)

	var pseudo uint16
	if s.v6 {
		ip := header.IPv6(dst)
		ip.SetPayloadLength(uint16(n - header.IPv6MinimumSize))
		pseudo = header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	} else {
		ip := header.IPv4(dst)
		ip.SetTotalLength(uint16(n))
		ip.SetID(ip.ID() + uint16(s.count))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		pseudo = header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	}
	tcp.SetChecksum(^checksum.Checksum(tcp, pseudo))

	s.next = end
	s.count++
	if last {
		s.pkt = nil
	}
	return n
}
