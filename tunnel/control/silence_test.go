package control

import (
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
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
