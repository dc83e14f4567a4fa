package bind

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/tunnel/link"
)

// Handshakes. WireGuard retries a handshake that got no answer after 5 s,
// and gives up on a half-made session after 15 s; on punched paths, which
// appear, vanish and move under it, that is most of the time a user
// waits. The Bind sees every handshake message of a peer whose path the
// control plane finds, and helps in five ways:
//
//   - Hold: until a route exists, the latest initiation and response are
//     held and sent the moment one is set: the peer's initiation may come
//     over the relay a moment before our own intro gives us a route back.
//   - Copy: a response is sent again handshakeCopyDelay later, so that
//     one loss does not cost the 5 s retry; an initiation, every round
//     trip or two until answered, and a response again when a copy of
//     the initiation it answered comes (retransmit, reanswer).
//   - Crossing: two peers that both have traffic from the first moment
//     send initiations that cross (held on both sides, both leave when the
//     intro comes). Each side answers the other's and then refuses the
//     answer to its own, since WireGuard keeps one handshake per peer:
//     nobody has a session until a retry 5 or 15 s later. So the leader
//     (the smaller public key, as in nat.Punch) drops the peer's
//     initiation while its own is held or left less than crossWindow ago
//     (answered or not), and the follower answers the leader's: one
//     handshake, made in one round trip. The other way round, the
//     leader's own initiation that leaves just after the peer's was let
//     through is not sent (ownCrossing). But a peer that restarted after
//     our handshake was answered sends an initiation of a new process,
//     which no answer of ours will ever meet: one that comes longer after
//     that answer than the follower's held initiation could (a round
//     trip, at least restartGap) is taken at once, so a restart within
//     the window costs no 5 s retry.
//   - New path: a message sent on a path that is then replaced (dead, as
//     after a NAT forgot an idle mapping) is sent again on the new one at
//     once, rather than at the next retry; an initiation only while it can
//     still make a session (pending).
//   - Reply the way it came: an initiation that arrived by another way
//     than our route (the relay, while our direct path is dead after the
//     peer restarted) is answered that way, and the control plane hears
//     of it: the peer has no direct path to us, so ours is suspect.
type handshakes struct {
	held [2][]byte // latest initiation and response, waiting for a route
	// The latest initiation and response sent, and when.
	last   [2][]byte
	lastAt [2]time.Time
	// inFlight: when our latest initiation left, until an answer to it
	// came; madeAt: when WireGuard made it (not when it was sent again).
	inFlight time.Time
	madeAt   time.Time
	// answered is our initiation that got an answer (its copies are no
	// new handshake), answeredAt when, and rtt the handshake's round trip.
	answered   []byte
	answeredAt time.Time
	rtt        time.Duration
	dropped    []byte    // the peer's initiation the leader dropped
	ownDropped bool      // the leader did not send an initiation of its own (ownCrossing)
	replyVia   *route    // where the peer's latest initiation came from, if not our route
	viaAt      time.Time // when it came
	// admitted: the peer's latest initiation and response let through,
	// and when; their copies are dropped (dedupe).
	admitted   [2][]byte
	admittedAt [2]time.Time
	// handedAt: when WireGuard got the admitted initiation; zero while it
	// waits in the queue of the other transports (inject).
	handedAt time.Time
	// respondedAt: when WireGuard last sent a response of its own (not
	// one sent again on a new route).
	respondedAt time.Time
	// reansweredAt: when our response last went again for a copy of the
	// initiation it answered; retrying: the initiation being sent again
	// (PeerEndpoint.retransmit).
	reansweredAt time.Time
	retrying     []byte
}

// dedupeWindow is how long a copy of a handshake message already let
// through is dropped: its copies come within a second. WireGuard rejects
// a copy it handles after the original, but two copies that arrive
// together (a TCP stream delivers a stalled burst at once) go to its two
// handshake workers side by side, both pass, and the second session
// tears the first one's index out of its table.
const dedupeWindow = 5 * time.Second

const (
	// handshakeCopyDelay is when the copy of a handshake message follows
	// it: after a round trip on any sane path, well before WireGuard's
	// 5 s retry.
	handshakeCopyDelay = 300 * time.Millisecond
	// crossWindow is how long after our initiation left the leader takes
	// a peer's initiation for a crossing one: a round trip and the copy,
	// on a slow path.
	crossWindow = time.Second
	// resendWindow is how long a handshake message stays worth sending
	// again on a new path: WireGuard's own retry comes after 5 s.
	resendWindow = 5 * time.Second
)

// The leader's own initiation crossing the peer's. The leader's WireGuard
// can make its initiation a moment before it takes the peer's, which the
// Bind let through while no initiation of ours had left. Taking it
// replaces the handshake ours began, so no answer to ours can ever be
// used; and the follower, which answers the leader's, replaces its own
// handshake with that one, so the answer to its initiation finds nothing
// to complete. Nobody has a session until WireGuard's 5-s retry (seen in
// the lab: TestPolicyFlowFlood, TestPolicyDestination). So an initiation
// of the leader that leaves less than crossWindow after the peer's was
// let through is not sent once WireGuard has answered the peer's: it was
// made before, since WireGuard makes no initiation for 5 s after it
// answered one (RekeyTimeout). While WireGuard has not answered, it
// waits until WireGuard has had the peer's initiation for crossSettle
// (counted from when WireGuard got it, or from when ours came, whichever
// is later: one that came by another transport waits in a queue first),
// and leaves if no answer came: WireGuard refused the peer's initiation (a
// replay, or one that came before WireGuard had the peer), and a replayed
// initiation must not keep ours from leaving. It never waits past the
// window.
type crossVerdict int

const (
	crossSend crossVerdict = iota
	crossDrop
	crossWait
)

// crossSettle is how long the leader's initiation waits for WireGuard's
// answer to the peer's: WireGuard's handshake worker takes it within a
// millisecond or two, tens on a loaded machine.
const crossSettle = 100 * time.Millisecond

// ownCrossing decides on the leader's own initiation init, which reached
// the Bind at came. An initiation that left or was held already (sent
// again on a new route) leaves.
func (pe *PeerEndpoint) ownCrossing(init []byte, came, now time.Time) crossVerdict {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	hs := &pe.hs
	if !pe.leader || init[0] != wireGuardInitiation || hs.admitted[0] == nil || now.Sub(hs.admittedAt[0]) >= crossWindow || bytes.Equal(init, hs.last[0]) {
		return crossSend
	}
	if answers(hs.last[1], hs.admitted[0]) && !hs.respondedAt.Before(hs.admittedAt[0]) {
		hs.ownDropped = true
		return crossDrop
	}
	if !hs.handedAt.IsZero() && now.Sub(hs.handedAt) >= crossSettle && now.Sub(came) >= crossSettle {
		return crossSend
	}
	return crossWait
}

// handed notes that WireGuard got p, an initiation of the peer that came
// by another transport, now.
func (pe *PeerEndpoint) handed(p []byte, now time.Time) {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	if bytes.Equal(p, pe.hs.admitted[0]) {
		pe.hs.handedAt = now
	}
}

// sending notes the handshake messages among bufs, about to be sent on r
// (nil: held until a route exists).
func (pe *PeerEndpoint) sending(bufs [][]byte, r *route, now time.Time) {
	for _, p := range bufs {
		if !isHandshake(p) {
			continue
		}
		i := p[0] - wireGuardInitiation
		pe.mu.Lock()
		hs := &pe.hs
		if r == nil {
			hs.held[i] = append(hs.held[i][:0], p...)
		}
		if p[0] == wireGuardInitiation && bytes.Equal(p, hs.answered) {
			pe.mu.Unlock()
			continue // an initiation answered already, sent again on a new path
		}
		if i == 1 && !bytes.Equal(p, hs.last[1]) {
			hs.respondedAt = now
		}
		if i == 0 && !bytes.Equal(p, hs.last[0]) {
			hs.madeAt = now
		}
		hs.last[i], hs.lastAt[i] = append(hs.last[i][:0], p...), now
		if p[0] == wireGuardInitiation {
			hs.inFlight = now
		}
		pe.mu.Unlock()
	}
}

// replyPath returns where to send a handshake response instead of r: the
// way the peer's initiation came, if that was another. Instead, not as
// well: two copies of a response taken by WireGuard's handshake workers at
// once both pass, and the second session, with the same index, tears the
// first one's index out of WireGuard's table.
func (pe *PeerEndpoint) replyPath(p []byte, r *route, now time.Time) *route {
	if len(p) == 0 || p[0] != wireGuardResponse {
		return nil
	}
	pe.mu.Lock()
	defer pe.mu.Unlock()
	via := pe.hs.replyVia
	if via == nil || now.Sub(pe.hs.viaAt) > crossWindow || r != nil && via.Route == r.Route {
		return nil
	}
	return via
}

// admitHandshake decides whether a handshake message from the peer, which
// came by via (nil: a way we cannot answer on, such as a TCP stream), goes
// on to WireGuard.
func (pe *PeerEndpoint) admitHandshake(p []byte, via *route, now time.Time) (admit bool) {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	hs := &pe.hs
	i := p[0] - wireGuardInitiation
	if now.Sub(hs.admittedAt[i]) < dedupeWindow && bytes.Equal(p, hs.admitted[i]) && !hs.unheard(p, now) {
		return false // a copy of one let through
	}
	defer func() {
		if admit {
			hs.admitted[i], hs.admittedAt[i] = append(hs.admitted[i][:0], p...), now
		}
	}()
	switch p[0] {
	case wireGuardResponse:
		// An answer to an older initiation WireGuard refuses: the latest
		// stays in flight, and is still sent again.
		if answers(p, hs.last[0]) {
			hs.answered, hs.answeredAt = append(hs.answered[:0], hs.last[0]...), now
			hs.rtt = now.Sub(hs.lastAt[0])
			hs.inFlight = time.Time{}
		}
		return true
	case wireGuardInitiation:
		if hs.dropped != nil && bytes.Equal(p, hs.dropped) {
			return false // the copy of one we dropped
		}
		// Answered or not: the follower's held initiation leaves with its
		// answer to ours, and may come right after it.
		if pe.leader && (hs.held[0] != nil || !hs.lastAt[0].IsZero() && now.Sub(hs.lastAt[0]) < crossWindow && !hs.restarted(now)) {
			hs.dropped = append(hs.dropped[:0], p...)
			return false // crossed: the peer answers ours
		}
		hs.replyVia, hs.viaAt = nil, now
		hs.handedAt = time.Time{} // until received or receiveSide says
		if r := pe.route.Load(); via != nil && (r == nil || r.Route != via.Route) {
			hs.replyVia = via
		}
	}
	return true
}

// unheard reports whether p is a copy of the peer's initiation we let
// through at least minRetry ago that WireGuard never answered: it came
// before WireGuard had the peer (a member added a moment after its first
// initiation arrived), so WireGuard dropped it. The copy goes on, or the
// peer's copies are all dropped here, the initiation we then send ourselves
// crosses the peer's (the leader drops it), and nobody has a session until
// WireGuard's 5-s retry. Copies that come together are still one. Callers
// hold pe.mu.
func (hs *handshakes) unheard(p []byte, now time.Time) bool {
	return p[0] == wireGuardInitiation && now.Sub(hs.admittedAt[0]) >= minRetry && !answers(hs.last[1], p)
}

// forgetBefore forgets the handshake messages sent or held before woke,
// and all that was let through: only our latest initiation and response
// sent since then are kept (Resumed). Callers hold pe.mu.
func (hs *handshakes) forgetBefore(woke time.Time) {
	var kept handshakes
	for i := range hs.last {
		if hs.last[i] != nil && hs.lastAt[i].After(woke) {
			kept.last[i], kept.lastAt[i], kept.held[i] = hs.last[i], hs.lastAt[i], hs.held[i]
		}
	}
	if kept.last[0] != nil {
		kept.inFlight, kept.madeAt, kept.retrying = hs.inFlight, hs.madeAt, hs.retrying
	}
	if kept.last[1] != nil {
		kept.respondedAt = hs.respondedAt
	}
	*hs = kept
}

// After a freeze. A process that was stopped (SIGSTOP, a paused VM) or a
// machine that slept finds, on waking, what the peers sent meanwhile in its
// socket buffers — among it initiations the peer made long ago, whose
// handshakes the peer has given up. Answering one replaces the handshake
// this side starts on waking, and neither side has a session until
// WireGuard's 5-s retry. So an initiation is dropped while the control
// plane has not ticked for staleAfter (the process has just woken and
// reads its backlog before the control plane notices), and for
// resumeWindow after the control plane said it resumed; the handshake it
// starts then is answered, and the peer's own come later.
const (
	staleAfter   = time.Second
	resumeWindow = 300 * time.Millisecond
)

// restartGap is the least time after the answer to our initiation that a
// peer's initiation must come to be taken for one of a restarted peer, not
// the follower's held initiation, which leaves with its answer.
const restartGap = 50 * time.Millisecond

// restarted reports whether a peer's initiation arriving now comes from a
// peer that restarted since it answered ours: our latest initiation was
// answered, longer ago than a round trip and restartGap. Callers hold
// pe.mu.
func (hs *handshakes) restarted(now time.Time) bool {
	return hs.answered != nil && bytes.Equal(hs.answered, hs.last[0]) && now.Sub(hs.answeredAt) > max(hs.rtt, restartGap)
}

// pending reports whether our latest initiation can still make a session:
// it left or is held, no answer to it came (inFlight), and WireGuard has
// not answered the peer's since it made ours. Answering the peer's replaces the handshake ours began, so an answer to
// ours would be refused; and a peer that restarted meanwhile would answer
// it (a new process has no record of the old initiations), which puts off
// the new process's own initiation by WireGuard's 5 s between handshakes:
// nobody would have a session until the 15-s retry (seen in the rootless
// harness's restart). Callers hold pe.mu.
func (hs *handshakes) pending() bool {
	return !hs.inFlight.IsZero() && !hs.respondedAt.After(hs.madeAt)
}

// answered reports whether p is our initiation that got its answer.
func (pe *PeerEndpoint) answered(p []byte) bool {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	return p[0] == wireGuardInitiation && bytes.Equal(p, pe.hs.answered)
}

// answers reports whether the response resp answers the initiation init:
// its receiver index is the initiation's sender index.
func answers(resp, init []byte) bool {
	return len(resp) >= 12 && len(init) >= 8 && bytes.Equal(resp[8:12], init[4:8])
}

// takeHandshakes returns what to send on a new route: the held messages,
// else those sent lately that may have gone down the old one (an
// initiation only while unanswered).
func (pe *PeerEndpoint) takeHandshakes(now time.Time) [][]byte {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	hs := &pe.hs
	var out [][]byte
	for i := range hs.last {
		// An initiation is worth sending until WireGuard's retry, 5 s
		// after it made it, however often it went again since.
		made := hs.lastAt[i]
		if i == 0 {
			made = hs.madeAt
		}
		switch {
		case i == 0 && !hs.pending():
			hs.held[0] = nil // answered, or WireGuard answered the peer's since: dead, held or sent
		case hs.held[i] != nil:
			out = append(out, hs.held[i])
			hs.held[i] = nil
		case hs.last[i] == nil || now.Sub(made) > resendWindow:
		case now.Sub(hs.lastAt[i]) < handshakeCopyDelay:
			// Its copy is still to come, on the new route: sending it now
			// as well would put two copies in WireGuard's handshake
			// workers at once, and both would be taken.
		default:
			out = append(out, bytes.Clone(hs.last[i]))
		}
	}
	return out
}

// via is the route a packet from src came by: the relay at src when
// relayed, else the peer at src; nil for an invalid src (a TCP stream or a
// birthday socket, which the Bind cannot answer on by address alone) and
// for pe's own TURN relayed address: what we send there reaches the peer
// through its allocation from our NAT's address, not a relayed one, and
// its Bind drops that (fromTURN); our own route to it is TURN's way back.
// Only pe's: another member naming src as its relayed address changes
// nothing for pe's packets.
func (b *Bind) via(pe *PeerEndpoint, src netip.AddrPort, relayed bool) *route {
	if !src.IsValid() {
		return nil
	}
	if turn := b.turnPeers.Load(); !relayed && turn != nil && (*turn)[src] == pe {
		return nil
	}
	t := b.shared
	if relayed {
		t = b.relay
	}
	return &route{Route: link.Route{Dst: src, Via: t}}
}

// Handshaking reports whether handshake messages were held or sent lately.
func (pe *PeerEndpoint) Handshaking(now time.Time) bool {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	hs := &pe.hs
	return hs.held[0] != nil || hs.held[1] != nil || now.Sub(hs.lastAt[0]) < resendWindow || now.Sub(hs.lastAt[1]) < resendWindow
}

// HandshakeState describes pe's handshake messages for a log line: what
// is held, when the latest of each left, whether our initiation is
// unanswered, and what was admitted or dropped.
func (pe *PeerEndpoint) HandshakeState(now time.Time) string {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	hs := &pe.hs
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return now.Sub(t).Round(time.Millisecond).String() + " ago"
	}
	return fmt.Sprintf("leader=%v held=[%v %v] initiation sent %s, response sent %s, in flight since %s, admitted initiation %s, response %s, dropped a crossing initiation=%v, did not send our own crossing one=%v, ours can still make a session=%v",
		pe.leader, hs.held[0] != nil, hs.held[1] != nil, ago(hs.lastAt[0]), ago(hs.lastAt[1]), ago(hs.inFlight),
		ago(hs.admittedAt[0]), ago(hs.admittedAt[1]), hs.dropped != nil, hs.ownDropped, hs.pending())
}
