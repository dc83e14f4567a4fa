package nat

import (
	"net/netip"
	"testing"
	"time"
)

type sent struct {
	to netip.AddrPort
	m  Probe
}

// harness drives a Punch with a fake clock and records what it sends.
type harness struct {
	p    *Punch
	now  time.Time
	sent []sent
}

func newHarness(leader bool) *harness {
	h := &harness{now: time.Unix(1000, 0)}
	h.p = NewPunch(leader, func(to netip.AddrPort, m Probe) { h.sent = append(h.sent, sent{to, m}) })
	return h
}

// pingsTo returns the pings sent to addr so far.
func (h *harness) pingsTo(addr netip.AddrPort) []Probe {
	var out []Probe
	for _, s := range h.sent {
		if !s.m.Answer && s.to == addr {
			out = append(out, s.m)
		}
	}
	return out
}

// answer has the peer answer the last ping to addr, from addr.
func (h *harness) answer(addr netip.AddrPort, after time.Duration) Event {
	pings := h.pingsTo(addr)
	h.now = h.now.Add(after)
	return h.p.OnPong(h.now, addr, pings[len(pings)-1].TxID)
}

// idlePath returns a leader's or follower's harness with a path to
// public, its round over, idle from now on.
func idlePath(leader bool) *harness {
	h := newHarness(leader)
	h.p.Start(h.now, []netip.AddrPort{public}, PunchDuration)
	h.p.Tick(h.now)
	h.answer(public, time.Millisecond)
	h.now = h.now.Add(PunchDuration) // the round is over
	h.p.Tick(h.now)
	return h
}

var (
	public = netip.MustParseAddrPort("203.0.113.22:40000")
	lan    = netip.MustParseAddrPort("192.168.1.3:51820")
	wrong  = netip.MustParseAddrPort("192.168.1.2:51820")
)

func TestProbesEveryCandidateAtOnce(t *testing.T) {
	h := newHarness(true)
	h.p.Start(h.now, []netip.AddrPort{public, lan, wrong, public}, PunchDuration)
	h.p.Tick(h.now)
	for _, a := range []netip.AddrPort{public, lan, wrong} {
		if n := len(h.pingsTo(a)); n != 1 {
			t.Errorf("%v: %d pings, want 1", a, n)
		}
	}
	if len(h.sent) != 3 {
		t.Errorf("sent %d probes for 3 distinct candidates", len(h.sent))
	}
}

func TestLANBeatsPublic(t *testing.T) {
	h := newHarness(true)
	h.p.Start(h.now, []netip.AddrPort{public, lan}, PunchDuration)
	h.p.Tick(h.now)
	if ev := h.answer(public, 5*time.Millisecond); ev != EventChosen || h.p.Path().Kind != PathDirect {
		t.Fatalf("first answer: event %v path %+v", ev, h.p.Path())
	}
	if ev := h.answer(lan, time.Millisecond); ev != EventChosen || h.p.Path().Addr != lan || h.p.Path().Kind != PathLAN {
		t.Fatalf("LAN answer: event %v path %+v", ev, h.p.Path())
	}
	if h.p.Punching(h.now) {
		t.Error("still punching after a LAN path")
	}
}

func TestPublicDoesNotReplaceLAN(t *testing.T) {
	h := newHarness(true)
	h.p.Start(h.now, []netip.AddrPort{public, lan}, PunchDuration)
	h.p.Tick(h.now)
	h.answer(lan, time.Millisecond)
	if ev := h.answer(public, time.Millisecond); ev != EventNone || h.p.Path().Addr != lan {
		t.Fatalf("public answer moved the path: %v %+v", ev, h.p.Path())
	}
}

func TestUnsolicitedPongIgnored(t *testing.T) {
	h := newHarness(true)
	h.p.Start(h.now, []netip.AddrPort{lan}, PunchDuration)
	h.p.Tick(h.now)
	if ev := h.p.OnPong(h.now, wrong, [12]byte{42}); ev != EventNone || h.p.Path().Addr.IsValid() {
		t.Fatal("a pong to no ping of ours became a path")
	}
}

func TestPingAnsweredAndProbedBack(t *testing.T) {
	h := newHarness(false)
	h.p.OnPing(h.now, public, [12]byte{7})
	if len(h.sent) != 2 {
		t.Fatalf("sent %d, want a pong and a probe back", len(h.sent))
	}
	pong := h.sent[0].m
	if !pong.Answer || pong.TxID != [12]byte{7} || pong.Src != public || h.sent[0].to != public {
		t.Fatalf("bad pong %+v to %v", h.sent[0].m, h.sent[0].to)
	}
	if ev := h.answer(public, time.Millisecond); ev != EventChosen {
		t.Fatal("answer to the probe back did not make a path")
	}
}

func TestHeartbeatThenLoss(t *testing.T) {
	h := newHarness(true)
	h.p.Start(h.now, []netip.AddrPort{public}, PunchDuration)
	h.p.Tick(h.now)
	h.answer(public, time.Millisecond)
	h.sent = nil
	// Quiet until the heartbeat is due.
	beat := int(HeartbeatInterval / time.Second)
	for range beat - 1 {
		h.now = h.now.Add(time.Second)
		h.p.Tick(h.now)
	}
	if len(h.sent) != 0 {
		t.Fatalf("sent %d packets on an idle path before the heartbeat", len(h.sent))
	}
	h.now = h.now.Add(time.Second)
	h.p.Tick(h.now)
	if len(h.pingsTo(public)) != 1 {
		t.Fatalf("no heartbeat after %v", HeartbeatInterval)
	}
	// Unanswered: retried every retryInterval, then the path is lost
	// after PathTimeout.
	var ev Event
	for i := 0; i <= int(PathTimeout/retryInterval) && ev == EventNone; i++ {
		h.now = h.now.Add(retryInterval)
		ev = h.p.Tick(h.now)
	}
	if ev != EventLost || h.p.Path().Addr.IsValid() {
		t.Fatalf("path not lost: %v %+v", ev, h.p.Path())
	}
	if n := len(h.pingsTo(public)); n < 5 {
		t.Errorf("only %d heartbeat retries", n)
	}
}

func TestFollowerLeavesHeartbeatToLeader(t *testing.T) {
	h := newHarness(false)
	h.p.Start(h.now, []netip.AddrPort{public}, PunchDuration)
	h.p.Tick(h.now)
	h.answer(public, time.Millisecond)
	h.sent = nil
	beat := int(HeartbeatInterval / time.Second)
	for i := range beat {
		h.now = h.now.Add(time.Second)
		h.p.Tick(h.now)
		if i == beat-int(followerDelay/time.Second) {
			// The leader's heartbeat arrives.
			h.p.OnPing(h.now, public, [12]byte{})
		}
	}
	for _, s := range h.sent {
		if !s.m.Answer {
			t.Fatal("follower sent a heartbeat although the leader's arrived")
		}
	}
}

func TestKindOf(t *testing.T) {
	for addr, want := range map[string]PathKind{
		"192.168.1.2:1": PathLAN, "10.1.2.3:1": PathLAN, "172.16.0.1:1": PathLAN, "[fd00::1]:1": PathLAN,
		"[fe80::1]:1": PathLAN, "203.0.113.5:1": PathDirect, "[2001:db8::1]:1": PathDirect,
	} {
		if got := KindOf(netip.MustParseAddrPort(addr)); got != want {
			t.Errorf("%s: %v, want %v", addr, got, want)
		}
	}
}

func TestSuspectPath(t *testing.T) {
	h := idlePath(true)

	// Suspected and answered: the path stays, and is not probed again.
	h.sent = nil
	h.p.Suspect(h.now)
	if len(h.pingsTo(public)) != 1 {
		t.Fatal("a suspect path is not probed at once")
	}
	if h.answer(public, 5*time.Millisecond) != EventNone {
		t.Fatal("answered probe changed the path")
	}
	for range 10 {
		h.now = h.now.Add(500 * time.Millisecond)
		if ev := h.p.Tick(h.now); ev != EventNone {
			t.Fatalf("path lost after its probe was answered: %v", ev)
		}
	}
	if n := len(h.pingsTo(public)); n != 1 {
		t.Fatalf("%d probes after the answer", n)
	}

	// Suspected and silent: lost within SuspectTimeout, probed meanwhile.
	h.sent = nil
	h.p.Suspect(h.now)
	start, ev := h.now, EventNone
	for ev == EventNone && h.now.Sub(start) < 2*SuspectTimeout {
		h.now = h.now.Add(100 * time.Millisecond)
		ev = h.p.Tick(h.now)
	}
	if ev != EventLost || h.now.Sub(start) > SuspectTimeout+200*time.Millisecond {
		t.Fatalf("silent suspect path: %v after %v", ev, h.now.Sub(start))
	}
	if n := len(h.pingsTo(public)); n < 3 {
		t.Errorf("only %d probes of a suspect path", n)
	}
}

// TestSuspectNow: a path suspected because the peer asked for an
// introduction is dropped after eight round trips unanswered (at least
// QuickSuspectTimeout), probed three times meanwhile; answered, it stays.
func TestSuspectNow(t *testing.T) {
	h := idlePath(true)

	h.p.SuspectNow(h.now)
	h.answer(public, 2*time.Millisecond)
	for range 20 {
		h.now = h.now.Add(50 * time.Millisecond)
		if ev := h.p.Tick(h.now); ev != EventNone {
			t.Fatalf("an answered path was lost: %v", ev)
		}
	}
	h.sent = nil
	h.p.SuspectNow(h.now)
	start, ev := h.now, EventNone
	for ev == EventNone && h.now.Sub(start) < SuspectTimeout {
		h.now = h.now.Add(10 * time.Millisecond)
		ev = h.p.Tick(h.now)
	}
	if took := h.now.Sub(start); ev != EventLost || took > QuickSuspectTimeout+20*time.Millisecond {
		t.Fatalf("silent path after SuspectNow: %v after %v, want lost after %v", ev, took, QuickSuspectTimeout)
	}
	if n := len(h.pingsTo(public)); n < 3 {
		t.Errorf("%d probes before the path was dropped, want 3", n)
	}
}

// TestFailedRoundBacksOff: the candidates of a round that found nothing
// are not punched again at every intro, but after FailedRoundBackoff,
// doubling; an intro during a round does not restart it; other candidates
// start a round at once.
func TestFailedRoundBacksOff(t *testing.T) {
	h := newHarness(true)
	cands := []netip.AddrPort{public}
	fail := func() {
		t.Helper()
		if !h.p.StartIfNew(h.now, cands, ShortPunchDuration) {
			t.Fatal("round not started")
		}
		if h.p.StartIfNew(h.now.Add(time.Second), cands, ShortPunchDuration) {
			t.Fatal("the same candidates restarted the round under way")
		}
		for h.p.Punching(h.now) {
			h.now = h.now.Add(PunchInterval)
			h.p.Tick(h.now)
		}
	}
	fail()
	if h.p.StartIfNew(h.now.Add(time.Second), cands, ShortPunchDuration) {
		t.Fatal("the failed candidates punched again a second later")
	}
	h.now = h.now.Add(FailedRoundBackoff)
	fail()
	if at := h.p.RetryAt(); at.Sub(h.now) != 2*FailedRoundBackoff {
		t.Fatalf("second failure: retry in %v, want %v", at.Sub(h.now), 2*FailedRoundBackoff)
	}
	// A round that ended since the last Tick counts as failed too.
	h.now = h.now.Add(2 * FailedRoundBackoff)
	h.p.StartIfNew(h.now, cands, ShortPunchDuration)
	if h.p.StartIfNew(h.now.Add(ShortPunchDuration), cands, ShortPunchDuration) {
		t.Fatal("a round that just ended, not yet ticked, was started again")
	}
	if !h.p.StartIfNew(h.now, []netip.AddrPort{public, netip.MustParseAddrPort("192.168.1.9:4000")}, ShortPunchDuration) {
		t.Fatal("new candidates did not start a round")
	}
}

// TestHeartbeatLearnsShortNATTimeout: on a path through a NAT that forgets
// an idle mapping after 20 s, the 25 s heartbeat goes unanswered until the
// peer's own probe opens the way again; the interval then shrinks below
// the NAT's timeout, and from then on every heartbeat is answered at once.
func TestHeartbeatLearnsShortNATTimeout(t *testing.T) {
	const natTimeout = 20 * time.Second
	h := newHarness(true)
	h.p.Start(h.now, []netip.AddrPort{public}, PunchDuration)
	h.p.Tick(h.now)
	h.answer(public, time.Millisecond)
	lastExchange := h.now
	retries := 0
	for range 200 * 10 { // 200 s in 100 ms steps
		h.now = h.now.Add(100 * time.Millisecond)
		h.sent = nil
		h.p.Tick(h.now)
		idle := h.now.Sub(lastExchange)
		if pings := h.pingsTo(public); len(pings) > 0 {
			if idle >= natTimeout {
				retries++ // lost in the peer's NAT, which forgot us
				if idle >= HeartbeatInterval+followerDelay {
					// The peer's own heartbeat gets in through the
					// mapping our probe just opened.
					h.p.OnPing(h.now, public, [12]byte{})
					lastExchange = h.now
				}
				continue
			}
			h.p.OnPong(h.now, public, pings[len(pings)-1].TxID)
			lastExchange = h.now
		}
	}
	if hb := h.p.Heartbeat(); hb >= natTimeout {
		t.Fatalf("heartbeat %v, want under the NAT's %v", hb, natTimeout)
	}
	// Two heartbeats lost, each retried until the peer's came: a retry
	// needed once may be a lost packet; twice in a row, the NAT.
	if lostTwice := 2 * int(1+followerDelay/retryInterval); retries > lostTwice {
		t.Errorf("%d probes lost in 200 s, want at most %d: the interval did not settle", retries, lostTwice)
	}
	if !h.p.Path().Addr.IsValid() {
		t.Error("path lost")
	}
	h.p.ResetHeartbeat()
	if h.p.Heartbeat() != HeartbeatInterval {
		t.Error("ResetHeartbeat kept the learned interval")
	}
}

// TestProbedBackWhileNoPath: without a path, each probe from the peer is
// probed back, even from a source already known and after the round: the
// first probe back may have been lost, and nothing else would try again.
func TestProbedBackWhileNoPath(t *testing.T) {
	h := newHarness(true)
	h.p.Start(h.now, []netip.AddrPort{lan}, ShortPunchDuration)
	h.now = h.now.Add(ShortPunchDuration + time.Second) // the round is over
	h.p.Tick(h.now)
	for i := range 2 {
		h.sent = nil
		h.p.OnPing(h.now, public, [12]byte{byte(i)})
		if len(h.pingsTo(public)) != 1 {
			t.Fatalf("probe %d from the peer: %d probes back, want 1", i, len(h.pingsTo(public)))
		}
	}
}

// TestPunchForget: after Forget, the candidates of a round that failed are
// tried again at once, as for a peer never met.
func TestPunchForget(t *testing.T) {
	now := time.Unix(1000, 0)
	p := NewPunch(true, func(netip.AddrPort, Probe) {})
	cands := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.22:4000")}
	p.Start(now, cands, time.Second)
	now = now.Add(2 * time.Second)
	p.Tick(now) // the round ends, having found nothing
	if p.StartIfNew(now, cands, time.Second) {
		t.Fatal("the failed round's candidates were tried again at once")
	}
	p.Forget()
	if !p.StartIfNew(now, cands, time.Second) {
		t.Fatal("after Forget, the same candidates wait out the failed round's backoff")
	}
}
