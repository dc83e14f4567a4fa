package policy

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// Members hand each other their network's documents inside the tunnel,
// so that a rendezvous that withholds one cannot keep it from a member
// that talks to one that has it. A gossip packet is an IP packet of
// protocol 253 from one member's address to another's; WireGuard
// authenticates it (its source is in the sender's AllowedIPs, which are
// its certificate's addresses), and the receiver's filter takes it out of
// the stream before the system sees it. Its body, version 1:
//
//	version 1 byte  1
//	kind    1 byte  1 summary: what the sender holds (cert.Summary, 24 bytes),
//	                  then a flag byte: 1 if it answers a summary
//	                2 document: one policy or revocation (cert encoding)
//
// Members that exchange data compare summaries: every second while they
// differ, every 30 s once they match, and at once after a change. A
// member that gets a summary other than its own sends what the other may
// lack; unless the summary was an answer, it sends its own summary back,
// so that the other learns whether they match and sends what it lacks in
// turn (tunnel/control, whose gossipGate also bounds what each member's
// gossip may cost).

// Gossip kinds.
const (
	GossipSummary  byte = 1
	GossipDocument byte = 2
	gossipVersion  byte = 1
)

// Gossip is one gossip body.
type Gossip struct {
	Kind    byte
	Summary cert.Summary
	Answer  bool   // a summary sent in answer to one
	Doc     []byte // a document's encoding
}

// Append writes g's body.
func (g Gossip) Append(b []byte) []byte {
	b = append(b, gossipVersion, g.Kind)
	if g.Kind == GossipSummary {
		b = cert.AppendSummary(b, g.Summary)
		flag := byte(0)
		if g.Answer {
			flag = 1
		}
		return append(b, flag)
	}
	return append(b, g.Doc...)
}

// ParseGossip reads a gossip body.
func ParseGossip(b []byte) (Gossip, error) {
	if len(b) < 2 || b[0] != gossipVersion {
		return Gossip{}, errors.New("gossip: not version 1")
	}
	g := Gossip{Kind: b[1]}
	switch g.Kind {
	case GossipSummary:
		if len(b) != 2+cert.SummaryLen+1 || b[len(b)-1] > 1 {
			return Gossip{}, errors.New("gossip: malformed summary")
		}
		g.Summary, _ = cert.ParseSummary(b[2 : 2+cert.SummaryLen])
		g.Answer = b[len(b)-1] == 1
	case GossipDocument:
		if len(b) == 2 || len(b) > 2+cert.MaxDocument {
			return Gossip{}, errors.New("gossip: document of no or too many bytes")
		}
		g.Doc = b[2:]
	default:
		return Gossip{}, errors.New("gossip: unknown kind")
	}
	return g, nil
}

// GossipPacket is the IP packet that carries body from src to dst.
func GossipPacket(src, dst netip.Addr, body []byte) []byte {
	if src.Is4() {
		pkt := make([]byte, 20, 20+len(body))
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:4], uint16(20+len(body)))
		pkt[6] = 0x40 // don't fragment
		pkt[8] = 64
		pkt[9] = protoGossip
		copy(pkt[12:16], src.AsSlice())
		copy(pkt[16:20], dst.AsSlice())
		binary.BigEndian.PutUint16(pkt[10:12], ipv4Checksum(pkt))
		return append(pkt, body...)
	}
	pkt := make([]byte, 40, 40+len(body))
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:6], uint16(len(body)))
	pkt[6] = protoGossip
	pkt[7] = 64
	copy(pkt[8:24], src.AsSlice())
	copy(pkt[24:40], dst.AsSlice())
	return append(pkt, body...)
}

func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// mayBeGossip reports whether pkt may carry gossip: of its protocol, or
// an IPv6 packet whose extension headers parse must read to know.
func mayBeGossip(pkt []byte) bool {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return pkt[9] == protoGossip
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		switch pkt[6] {
		case protoGossip, extHopByHop, extRouting, extFragment, extAH, extDestOpts:
			return true
		}
		return false
	}
	return true // too short to tell: parse drops what it cannot read
}

// isGossip reports whether pkt is of the gossip protocol.
func isGossip(pkt []byte) bool {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return pkt[9] == protoGossip
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return pkt[6] == protoGossip
	}
	return false
}

// takeGossip hands a plain gossip packet (ok, unfragmented, no IPv6
// extension headers: as GossipPacket builds them) from a member to this
// machine's address to the control plane; anything else of the protocol
// is dropped, counted as malformed: gossip in a fragment (IPv4's carries
// its protocol in every fragment; IPv6's first fragment names it in its
// header chain), behind extension headers, or a packet whose chain parse
// cannot read to its end (hidden: it could be gossip). A later IPv6
// fragment does not name it, but its datagram never reassembles without
// the first fragment, dropped here: gossip never reaches the system.
func (f *Filter) takeGossip(p *packet, ok bool) {
	fn := f.gossip.Load()
	t := f.table.Load()
	if !ok || p.hidden || p.fragmented || p.wrapped || fn == nil || t.members[p.src] == nil || t.self == nil || !t.self.holds(p.dst) {
		f.Dropped[DropMalformed].Add(1)
		return
	}
	(*fn)(p.src, p.payload)
}

func (m *Member) holds(a netip.Addr) bool {
	for _, x := range m.Addrs {
		if x == a {
			return true
		}
	}
	return false
}
