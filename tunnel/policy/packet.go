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
	// tunnel (gossip.go): 253 is for experiments (RFC 3692), so no
	// program on either machine uses it, and no port of theirs is taken.
	protoGossip = 253
)

// packet is what the filter reads of an IP packet's headers.
type packet struct {
	src, dst netip.Addr
	proto    uint8 // ICMP for both ICMPv4 and ICMPv6 (cert.ProtoICMP)
	// sport and dport are TCP's and UDP's ports; for ICMP echo, the
	// identifier is sport (requests) or dport (replies), as if a port.
	sport, dport uint16
	// fragment: a later fragment, with no transport header to read.
	fragment bool
	// icmpError: an ICMP error; inner is the flow of the packet it quotes.
	icmpError bool
	inner     flow
	payload   []byte // after the IP header (gossip's body)
}

// parse reads pkt's headers; false when it is no IP packet this filter
// can read (dropped, counted as malformed).
func parse(pkt []byte) (p packet, ok bool) {
	var l4 []byte
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || len(pkt) < ihl {
			return p, false
		}
		p.src = netip.AddrFrom4([4]byte(pkt[12:16]))
		p.dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		p.proto = pkt[9]
		p.fragment = binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0
		l4 = pkt[ihl:]
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		p.src = netip.AddrFrom16([16]byte(pkt[8:24]))
		p.dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		p.proto = pkt[6]
		l4 = pkt[40:]
		if p.proto == 44 { // a fragment header: read past it
			if len(l4) < 8 {
				return p, false
			}
			p.proto = l4[0]
			p.fragment = binary.BigEndian.Uint16(l4[2:4])&0xfff8 != 0
			l4 = l4[8:]
		}
	default:
		return p, false
	}
	p.payload = l4
	if p.fragment {
		return p, true
	}
	switch p.proto {
	case protoTCP, protoUDP:
		if len(l4) < 4 {
			return p, false
		}
		p.sport, p.dport = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case protoICMP, protoICMPv6:
		if len(l4) < 8 {
			return p, false
		}
		p.readICMP(l4)
		p.proto = protoICMP
	}
	return p, true
}

// readICMP takes an echo's identifier for a port, and an error's quoted
// packet for the flow it is about.
func (p *packet) readICMP(l4 []byte) {
	typ, v6 := l4[0], p.proto == protoICMPv6
	id := binary.BigEndian.Uint16(l4[4:6])
	switch {
	case !v6 && typ == 8, v6 && typ == 128: // echo request
		p.sport = id
	case !v6 && typ == 0, v6 && typ == 129: // echo reply
		p.dport = id
	case !v6 && (typ == 3 || typ == 11 || typ == 12), v6 && typ >= 1 && typ <= 4:
		if q, ok := parse(l4[8:]); ok && !q.fragment {
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
