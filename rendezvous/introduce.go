package rendezvous

import (
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Introductions: which pairs the server introduces and relays for, and
// the introductions themselves.

// mutual returns the registrations of a and b if both are registered and
// each lists the other, or both are members of one network: the pairs the
// server introduces and relays for. Callers hold s.mu.
func (s *Server) mutual(a, b key.Key) (ra, rb *registration, ok bool) {
	ra, rb = s.peers[a], s.peers[b]
	if ra == nil || rb == nil {
		return nil, nil, false
	}
	_, aWants := ra.wants[b]
	_, bWants := rb.wants[a]
	return ra, rb, aWants && bWants || sameNetwork(ra, rb)
}

// query introduces asker and target if both are registered and each lists
// the other. Otherwise it stays silent: a stranger who knows a public key
// learns nothing, not even whether that key is registered.
func (s *Server) query(asker, target key.Key) {
	a, b, ok := s.mutual(asker, target)
	if !ok {
		s.Stats.DropNotMutual.Add(1)
		return
	}
	s.introduce(asker, a, target, b)
}

// introduce tells each peer about the other at the same moment, so both
// start punching at once and each side's probes open the way for the other's.
func (s *Server) introduce(ka key.Key, a *registration, kb key.Key, b *registration) {
	now := uint64(time.Now().UnixNano())
	ia := &wire.Intro{Time: s.clock.Next(now), Peer: kb, Observed: b.endpoint, NAT: b.nat, Candidates: b.candidates}
	ib := &wire.Intro{Time: s.clock.Next(now), Peer: ka, Observed: a.endpoint, NAT: a.nat, Candidates: a.candidates}
	if sameNetwork(a, b) {
		// Each checks the other's certificate itself before it adds it.
		ia.Cert, ib.Cert = b.member.cert.Bytes(), a.member.cert.Bytes()
		introducedMembers(ka, a, kb, b)
	}
	// Counted before it is sent, so that whoever sees an introduction
	// arrive sees it counted.
	s.Stats.Introductions.Add(1)
	s.send(a, ia)
	s.send(b, ib)
	if s.turn.enabled() {
		// Fresh credentials with every introduction: the pair may need a
		// relay.
		s.offerTURN(ka, a, time.Now())
		s.offerTURN(kb, b, time.Now())
	}
	s.log.Debug("introduced", "a", ka, "a_endpoint", a.endpoint, "b", kb, "b_endpoint", b.endpoint)
}

func (s *Server) send(reg *registration, m wire.Body) {
	// What goes to an address spends its budget too: registrations need no
	// round trip, so ones from spoofed sources could otherwise aim acks and
	// introductions at a victim, many for one.
	if !s.allowSource(reg.endpoint, time.Now()) {
		return
	}
	b := wire.Seal(nil, m.Type(), s.pub, &reg.shared, m.Append(nil))
	reg.link.WriteToUDPAddrPort(b, reg.endpoint)
}
