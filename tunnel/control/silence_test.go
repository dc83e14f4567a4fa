package control

import (
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/tunnel/link"
)

func TestControlSilenceFallsBackToRelay(t *testing.T) {
	h := newHarness(t)
	h.goDirect()
	h.advance(nat.PunchDuration) // the round ends
	h.take()
	p := h.peer()
	// WireGuard sends, nothing comes back.
	p.ep.(*fakePeer).activity = link.Activity{Data: h.now, Received: h.now.Add(-silenceLimit - time.Second), Sent: h.now}
	h.advance(nat.SuspectTimeout + 3*tickInterval)
	if r := p.ep.Route(); !r.Relayed() {
		t.Fatalf("route %+v after the path stayed silent, want the relay", r)
	}
	if h.registrations(h.take()) == 0 {
		t.Fatal("a lost path did not register again at once")
	}
}

// A handshake alone is no use: WireGuard makes one on its own 15 s after
// data it sent went unanswered (or seemed to), and the idle tunnel must
// not then probe its path every 1.5 s for 10 s as it does for one in use
// that falls silent. Data, either way, is use.
func TestControlHandshakeAloneIsNoUse(t *testing.T) {
	for _, use := range []bool{false, true} {
		h := newHarness(t)
		h.goDirect()
		h.advance(nat.PunchDuration) // the round ends
		h.take()
		p := h.peer()
		// An initiation sent and its response heard, as the Bind notes
		// them; with use, data went too.
		a := link.Activity{Sent: h.now, Received: h.now, Data: h.now}
		if use {
			a.Use = h.now
		}
		p.ep.(*fakePeer).activity = a
		h.advance(silenceLimit + 3*tickInterval)
		if probed := h.answerProbes(h.take(), peerAddr) > 0; probed != use {
			t.Errorf("in use %v: probed the silent path %v, want %v", use, probed, use)
		}
	}
}

// A follower takes the leader's heartbeat interval from its heartbeats,
// not from the probe the leader's silence check sends when its WireGuard
// sends a handshake after an idle spell and has heard nothing since:
// WireGuard's retried first handshake, 6 s after the path was found,
// made a follower learn 5 s and probe every 10 s, and its leader never
// probe again (so it kept 25 s). A heartbeat after the handshake still
// teaches the interval.
func TestControlFollowerLearnsNotFromSilenceCheck(t *testing.T) {
	h := newHarness(t)
	for link.Leads(h.c.pub, h.peerPriv.Public()) {
		h = newHarness(t) // we must follow
	}
	h.goDirect()
	h.advance(6 * time.Second)
	p := h.peer()
	// The leader's initiation came, our response went.
	p.ep.(*fakePeer).activity = link.Activity{Sent: h.now, Received: h.now, Data: h.now}
	h.advance(tickInterval)
	h.fromPeer(&wire.Ping{TxID: [12]byte{1}}, peerAddr)
	if hb := p.punch.Heartbeat(); hb != nat.HeartbeatInterval {
		t.Fatalf("the leader's probe right after a handshake, 6 s after the last: heartbeat %v, want %v", hb, nat.HeartbeatInterval)
	}
	h.advance(16*time.Second + 700*time.Millisecond)
	h.fromPeer(&wire.Ping{TxID: [12]byte{2}}, peerAddr)
	if hb, want := p.punch.Heartbeat(), 2*nat.HeartbeatInterval/3; hb != want {
		t.Errorf("the leader's heartbeat after %v idle: heartbeat %v, want %v", want, hb, want)
	}
}
