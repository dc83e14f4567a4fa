package policy

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers the filter tells apart.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	// protoGossip carries members' documents to each other inside the
	// tunnel (Gossip): 253 is for experiments (RFC 3692), so no
	// program on either machine uses it, and no port of theirs is taken.
	protoGossip = 253
)

// IPv6 extension headers parse reads past to reach the transport header.
const (
	extHopByHop = 0
	extRouting  = 43
	extFragment = 44
	extAH       = 51
	extDestOpts = 60
	// maxExtHeaders bounds the chain read: a packet whose chain is longer
	// (no sender needs more than a handful) is dropped, its protocol
	// unknown (hidden).
	maxExtHeaders = 8
)

// TCP flags the flow table follows.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// packet is what the filter reads of an IP packet's headers.
type packet struct {
	src, dst netip.Addr
	proto    uint8 // ICMP for both ICMPv4 and ICMPv6 (cert.ProtoICMP)
	// sport and dport are TCP's and UDP's ports; for ICMP echo, the
	// identifier is sport (requests) or dport (replies), as if a port.
	sport, dport uint16
	tcpFlags     uint8
	// fragmented: one fragment of a datagram (first or later), of fragID;
	// fragment: a later one, with no transport header to read.
	fragmented, fragment bool
	fragID               uint32
	// wrapped: IPv6 extension headers or a fragment header came before
	// the transport header (gossip is never sent so). hidden: the chain
	// could not be read to its end, so the protocol is unknown.
	wrapped, hidden bool
	// icmpError: an ICMP error; inner is the flow of the packet it quotes.
	icmpError bool
	inner     flow
	payload   []byte // after the IP headers (gossip's body)
}

// parse reads pkt's headers; false when it is no IP packet this filter
// can read (dropped, counted as malformed, when a policy judges it).
func parse(pkt []byte) (p packet, ok bool) { return p, p.read(pkt, false) }

// read fills p from pkt's headers; quoted: pkt is the packet an ICMP
// error quotes, whose own ICMP errors are not read (no recursion).
func (p *packet) read(pkt []byte, quoted bool) bool {
	var l4 []byte
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || len(pkt) < ihl {
			return false
		}
		p.src = netip.AddrFrom4([4]byte(pkt[12:16]))
		p.dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		p.proto = pkt[9]
		frag := binary.BigEndian.Uint16(pkt[6:8])
		p.fragmented = frag&0x3fff != 0 // more fragments, or an offset
		p.fragment = frag&0x1fff != 0
		p.fragID = uint32(binary.BigEndian.Uint16(pkt[4:6]))
		l4 = pkt[ihl:]
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		p.src = netip.AddrFrom16([16]byte(pkt[8:24]))
		p.dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		var ok bool
		if l4, ok = p.readExtensions(pkt[6], pkt[40:]); !ok {
			return false
		}
	default:
		return false
	}
	p.payload = l4
	if p.fragment {
		if p.proto == protoICMPv6 {
			p.proto = protoICMP
		}
		return true
	}
	switch p.proto {
	case protoTCP, protoUDP:
		if len(l4) < 4 {
			return false
		}
		p.sport, p.dport = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		if p.proto == protoTCP && len(l4) >= 14 {
			p.tcpFlags = l4[13]
		}
	case protoICMP, protoICMPv6:
		if len(l4) < 8 {
			return false
		}
		p.readICMP(l4, quoted)
		p.proto = protoICMP
	}
	return true
}

// readExtensions follows an IPv6 header chain from next, the IPv6
// header's Next Header, to the transport header, which it returns; p gets
// the protocol and what a Fragment header says. False: the chain is
// longer than maxExtHeaders or cut short (p.hidden).
func (p *packet) readExtensions(next byte, b []byte) ([]byte, bool) {
	for range maxExtHeaders + 1 {
		p.proto = next
		var n int
		switch next {
		case extHopByHop, extRouting, extDestOpts:
			if len(b) < 2 {
				p.hidden = true
				return nil, false
			}
			n = (int(b[1]) + 1) * 8
		case extAH:
			if len(b) < 2 {
				p.hidden = true
				return nil, false
			}
			n = (int(b[1]) + 2) * 4
		case extFragment:
			n = 8
			if len(b) >= 8 {
				frag := binary.BigEndian.Uint16(b[2:4])
				p.fragmented = true
				p.fragment = frag&0xfff8 != 0
				p.fragID = binary.BigEndian.Uint32(b[4:8])
			}
		default:
			return b, true // the transport header, or a protocol with none parse reads
		}
		if len(b) < n {
			p.hidden = true
			return nil, false
		}
		p.wrapped = true
		next, b = b[0], b[n:]
		if p.fragment {
			// A later fragment: what follows is the middle of a datagram.
			// Its protocol is the Fragment header's Next Header.
			p.proto = next
			return b, true
		}
	}
	p.hidden = true
	return nil, false
}

// readICMP takes an echo's identifier for a port, and an error's quoted
// packet for the flow it is about.
func (p *packet) readICMP(l4 []byte, quoted bool) {
	typ, v6 := l4[0], p.proto == protoICMPv6
	id := binary.BigEndian.Uint16(l4[4:6])
	switch {
	case !v6 && typ == 8, v6 && typ == 128: // echo request
		p.sport = id
	case !v6 && typ == 0, v6 && typ == 129: // echo reply
		p.dport = id
	case quoted:
	case !v6 && (typ == 3 || typ == 11 || typ == 12), v6 && typ >= 1 && typ <= 4:
		var q packet
		if q.read(l4[8:], true) && !q.fragment {
			// The quoted packet is one this side sent: its source is local.
			p.icmpError, p.inner = true, q.outbound()
		}
	}
}

// flow names a connection from this machine's side.
type flow struct {
	proto         uint8
	local, remote netip.Addr
	lport, rport  uint16
}

// outbound is the flow of a packet this machine sends.
func (p *packet) outbound() flow {
	return flow{proto: p.proto, local: p.src, remote: p.dst, lport: p.sport, rport: p.dport}
}

// inbound is the flow of a packet this machine receives.
func (p *packet) inbound() flow {
	return flow{proto: p.proto, local: p.dst, remote: p.src, lport: p.dport, rport: p.sport}
}
