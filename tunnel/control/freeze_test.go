package control

import (
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/tunnel/link"
)

// TestControlShortFreezeKeepsDirect: a tick 5 s late (the process was
// stopped for less than the NATs keep an idle mapping) keeps the direct
// path and probes it at once; answered, it stays; the data path is told
// and a handshake starts, as after any freeze.
func TestControlShortFreezeKeepsDirect(t *testing.T) {
	h := newFrozenHarness(t, time.Second, 5*time.Second)
	p := h.peer()
	if r := p.ep.Route(); r.Relayed() || r.Dst != peerAddr {
		t.Fatalf("route %+v right after a 5-s freeze, want direct to %v", r, peerAddr)
	}
	if h.data.resumed != 1 || h.c.wg.(*fakeWireGuard).rehandshakes != 1 {
		t.Errorf("data path told %d times, %d new handshakes; want 1 and 1", h.data.resumed, h.c.wg.(*fakeWireGuard).rehandshakes)
	}
	sent := h.take()
	h.setNow(h.now.Add(time.Millisecond)) // the round trip
	if h.answerProbes(sent, peerAddr) == 0 {
		t.Fatal("no probe of the direct path after the freeze")
	}
	h.advance(nat.SuspectTimeout + time.Second)
	if r := p.ep.Route(); r.Relayed() || r.Dst != peerAddr {
		t.Fatalf("route %+v after the probe was answered, want direct to %v", r, peerAddr)
	}
}

// TestControlShortFreezeDeadPath: the path probed after a short freeze
// that nobody answers is left for the relay within nat.SuspectTimeout.
func TestControlShortFreezeDeadPath(t *testing.T) {
	h := newFrozenHarness(t, time.Second, 5*time.Second)
	h.advance(nat.SuspectTimeout + 3*tickInterval)
	if r := h.peer().ep.Route(); !r.Relayed() {
		t.Fatalf("route %+v after its probes went unanswered, want the relay", r)
	}
}

// TestControlLongIdleFreezeIsANetworkChange: a 5-s freeze after the path
// was last heard nearly a heartbeat interval ago adds up to more than the
// NATs are known to keep an idle mapping: the path is left at once.
func TestControlLongIdleFreezeIsANetworkChange(t *testing.T) {
	h := newFrozenHarness(t, nat.HeartbeatInterval-2*time.Second, 5*time.Second) // heard nothing before
	if r := h.peer().ep.Route(); !r.Relayed() {
		t.Fatalf("route %+v, want the relay", r)
	}
}

// TestControlShortFreezeBusyPath: on a path in use, WireGuard's packets,
// not the probes (sent only when it falls silent), show it alive: a 5-s
// freeze long after the last probe keeps it.
func TestControlShortFreezeBusyPath(t *testing.T) {
	h := newHarness(t)
	h.goDirect()
	h.advance(nat.HeartbeatInterval - 2*time.Second)
	h.take()
	h.peer().ep.(*fakePeer).activity = link.Activity{Sent: h.now, Received: h.now, Data: h.now}
	h.freeze(5 * time.Second)
	if r := h.peer().ep.Route(); r.Relayed() || r.Dst != peerAddr {
		t.Fatalf("route %+v right after a 5-s freeze of a busy path, want direct to %v", r, peerAddr)
	}
}

// newFrozenHarness is a harness with a direct path to the peer, quiet for
// idle, then frozen for gap.
func newFrozenHarness(t *testing.T, idle, gap time.Duration) *harness {
	h := newHarness(t)
	h.goDirect()
	h.advance(idle)
	h.take()
	h.freeze(gap)
	return h
}

// freeze is a control goroutine stopped for gap: its next tick comes that
// much late.
func (h *harness) freeze(gap time.Duration) {
	h.setNow(h.now.Add(gap))
	h.c.tick(h.now)
}
