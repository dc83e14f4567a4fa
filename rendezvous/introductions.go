package rendezvous

import (
	"log/slog"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// maxIntroduced bounds the members remembered as introduced to one
// member, which hear of it again when it moves.
const maxIntroduced = 256

// introductions tells two registered peers about each other, and
// remembers which members met, so that each hears of the other again when
// it moves, as peers that list each other do. The registry owns it: it is
// used under the registry's lock only.
type introductions struct {
	turn  *turnCredentials
	clock *lockedClock
	stats *Stats
	log   *slog.Logger
	// met are, per member, the members it was introduced to.
	met map[key.Key]map[key.Key]struct{}
}

// introduce tells each peer about the other at the same moment, so both
// start punching at once and each side's probes open the way for the other's.
func (in *introductions) introduce(ka key.Key, a *peerRecord, kb key.Key, b *peerRecord, out *outgoing) {
	now := time.Now()
	ia := &wire.Intro{Time: in.clock.stamp(now), Peer: kb, Observed: b.endpoint, NAT: b.nat, Candidates: b.candidates}
	ib := &wire.Intro{Time: in.clock.stamp(now), Peer: ka, Observed: a.endpoint, NAT: a.nat, Candidates: a.candidates}
	if sameNetwork(a, b) {
		// Each checks the other's certificate itself before it adds it.
		ia.Cert, ib.Cert = b.member.cert.Bytes(), a.member.cert.Bytes()
		in.remember(ka, kb)
		in.remember(kb, ka)
	}
	// Counted before it is sent, so that whoever sees an introduction
	// arrive sees it counted.
	in.stats.Introductions.Add(1)
	out.add(a.destination, ia)
	out.add(b.destination, ib)
	if in.turn.enabled() {
		// Fresh credentials with every introduction: the pair may need a
		// relay.
		in.turn.offer(ka, a, time.Now(), out)
		in.turn.offer(kb, b, time.Now(), out)
	}
	in.log.Debug("introduced", "a", ka, "a_endpoint", a.endpoint, "b", kb, "b_endpoint", b.endpoint)
}

// remember notes that member a met b.
func (in *introductions) remember(a, b key.Key) {
	m := in.met[a]
	if m == nil {
		m = make(map[key.Key]struct{})
		in.met[a] = m
	}
	if len(m) >= maxIntroduced {
		clear(m) // the oldest pairs hear of a move by asking
	}
	m[b] = struct{}{}
}

// metBy returns the members k was introduced to.
func (in *introductions) metBy(k key.Key) map[key.Key]struct{} { return in.met[k] }

// forget forgets whom k met: it is no member any more.
func (in *introductions) forget(k key.Key) { delete(in.met, k) }
