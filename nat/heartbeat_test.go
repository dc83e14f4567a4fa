package nat

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// beat runs the idle path's clock to its next heartbeat and has the peer
// answer it, after the first lost probes of it went unanswered.
func (h *harness) beat(t *testing.T, lost int) {
	t.Helper()
	h.sent = nil
	for step := 0; ; step++ {
		if step > 1000 {
			t.Fatal("no heartbeat within 100 s")
		}
		h.now = h.now.Add(100 * time.Millisecond)
		h.p.Tick(h.now)
		if pings := h.pingsTo(public); len(pings) > lost {
			h.p.OnPong(h.now, public, pings[len(pings)-1].TxID)
			return
		}
	}
}

// A heartbeat lost now and then, on a lossy link or a loaded host, is
// not a NAT that forgets: a week of it leaves the interval as it was.
// Before, each one cut the interval by a third, for good.
func TestHeartbeatOneLossKeepsInterval(t *testing.T) {
	h := idlePath(true)
	for i := range 7 * 24 * 60 * 60 / int(HeartbeatInterval/time.Second) {
		lost := 0
		if i%7 == 3 {
			lost = 1
		}
		h.beat(t, lost)
	}
	if hb := h.p.Heartbeat(); hb != HeartbeatInterval {
		t.Errorf("after a week with one heartbeat in 7 retried once: interval %v, want %v", hb, HeartbeatInterval)
	}
}

// Two heartbeats in a row retried shrink the interval; it grows back
// after an hour of heartbeats answered at once, but not to an interval
// that lost mappings within a day.
func TestHeartbeatShrinksThenRegrows(t *testing.T) {
	h := idlePath(true)
	h.beat(t, 1)
	h.beat(t, 1)
	short := intervalAt(1)
	if hb := h.p.Heartbeat(); hb != short {
		t.Fatalf("after two heartbeats in a row retried: %v, want %v", hb, short)
	}
	// An hour and more of answers: 25 s lost mappings today, so no.
	for until := h.now.Add(2 * regrowAfter); h.now.Before(until); {
		h.beat(t, 0)
	}
	if hb := h.p.Heartbeat(); hb != short {
		t.Fatalf("grew back to %v within a day of losing mappings at %v", hb, HeartbeatInterval)
	}
	// Shrunk once more.
	h.beat(t, 1)
	h.beat(t, 1)
	shorter := intervalAt(2)
	if hb := h.p.Heartbeat(); hb != shorter {
		t.Fatalf("after two more retried: %v, want %v", hb, shorter)
	}
	// It lost mappings at 16.7 s just now: back there after a day, and an
	// hour later to 25 s, which lost them a day ago.
	grewAt := map[time.Duration]time.Duration{}
	start := h.now
	for until := h.now.Add(forgetTooLong + 3*regrowAfter); h.now.Before(until); {
		h.beat(t, 0)
		if _, ok := grewAt[h.p.Heartbeat()]; !ok {
			grewAt[h.p.Heartbeat()] = h.now.Sub(start)
		}
	}
	if at, ok := grewAt[short]; !ok || at < forgetTooLong || at > forgetTooLong+HeartbeatInterval {
		t.Errorf("back to %v after %v (%v), want a day", short, at, ok)
	}
	if at, ok := grewAt[HeartbeatInterval]; !ok || at < forgetTooLong+regrowAfter || at > forgetTooLong+regrowAfter+HeartbeatInterval {
		t.Errorf("back to %v after %v (%v), want a day and an hour", HeartbeatInterval, at, ok)
	}
}

// The follower takes the leader's interval from its heartbeats, which
// come only when the tunnel is idle: a probe of the leader's while data
// flows (a silence check, answered or not) is no heartbeat. Before, one
// after 6 s made the follower probe every 10 s, on its own, for good.
func TestFollowerLearnsOnlyFromHeartbeats(t *testing.T) {
	h := idlePath(false)
	h.now = h.now.Add(6 * time.Second)
	h.p.SawData(h.now.Add(-time.Second))
	h.p.OnPing(h.now, public, [12]byte{1})
	if hb := h.p.Heartbeat(); hb != HeartbeatInterval {
		t.Errorf("a probe during traffic, 6 s after the last: follower's interval %v, want %v", hb, HeartbeatInterval)
	}
	// Idle since: the leader's heartbeat after 16.7 s is learned.
	h.now = h.now.Add(intervalAt(1) + 50*time.Millisecond)
	h.p.OnPing(h.now, public, [12]byte{2})
	if hb := h.p.Heartbeat(); hb != intervalAt(1) {
		t.Errorf("the leader's heartbeat after %v idle: follower's interval %v", intervalAt(1), hb)
	}
}

// natPath joins a leader's Punch (ends[0]) and a follower's (ends[1])
// through two NATs that forget a mapping idle for timeout, on a fake
// clock: a packet gets in only while the receiver's NAT still holds its
// mapping, and a packet through a NAT, either way, refreshes it.
type natPath struct {
	now     time.Time
	timeout time.Duration
	ends    [2]*natEnd
	queue   []natPacket
}

// natEnd is one peer: its Punch and its NAT's mapping.
type natEnd struct {
	p      *Punch
	addr   netip.AddrPort // the NAT's public endpoint
	mapped time.Time      // when the mapping was last refreshed
	// The owner's last WireGuard packet received, and either way.
	received, either time.Time
}

type natPacket struct {
	from int
	m    Probe
}

// newNATPath returns two peers with a path between them, at the end of
// the round that found it.
func newNATPath(t *testing.T, timeout time.Duration) *natPath {
	n := &natPath{now: time.Unix(1000, 0), timeout: timeout}
	addrs := [2]netip.AddrPort{public, netip.MustParseAddrPort("198.51.100.7:41000")}
	for i := range n.ends {
		n.ends[i] = &natEnd{addr: addrs[i]}
		n.ends[i].p = NewPunch(i == 0, func(_ netip.AddrPort, m Probe) { n.queue = append(n.queue, natPacket{i, m}) })
	}
	for i, e := range n.ends {
		e.p.Start(n.now, []netip.AddrPort{n.ends[1-i].addr}, PunchDuration)
	}
	for n.ends[0].p.Punching(n.now) || n.ends[1].p.Punching(n.now) {
		n.run(100 * time.Millisecond)
	}
	for _, e := range n.ends {
		if !e.p.Path().Addr.IsValid() {
			t.Fatal("no path")
		}
	}
	return n
}

// pass takes a packet from ends[from] through both NATs to the other
// end, and reports whether it got in.
func (n *natPath) pass(from int) (to *natEnd, src netip.AddrPort, ok bool) {
	n.ends[from].mapped = n.now
	to = n.ends[1-from]
	if n.now.Sub(to.mapped) >= n.timeout {
		return to, src, false
	}
	to.mapped = n.now
	return to, n.ends[from].addr, true
}

// run ticks both ends for d, in 100 ms steps, delivering their probes.
func (n *natPath) run(d time.Duration) {
	for end := n.now.Add(d); n.now.Before(end); {
		n.now = n.now.Add(100 * time.Millisecond)
		for _, e := range n.ends {
			e.p.Tick(n.now)
		}
		for len(n.queue) > 0 {
			pk := n.queue[0]
			n.queue = n.queue[1:]
			if to, src, ok := n.pass(pk.from); ok && pk.m.Answer {
				to.p.OnPong(n.now, src, pk.m.TxID)
			} else if ok {
				to.p.OnPing(n.now, src, pk.m.TxID)
			}
		}
	}
}

// wireGuard sends a WireGuard packet from ends[from], data or not (a
// handshake, a keepalive), as the owners see it, and reports whether it
// got in.
func (n *natPath) wireGuard(from int, data bool) bool {
	saw := func(e *natEnd) {
		e.either = n.now
		e.p.SawTraffic(e.received, e.either)
		if data {
			e.p.SawData(n.now)
		}
	}
	saw(n.ends[from])
	to, _, ok := n.pass(from)
	if ok {
		to.received = n.now
		saw(to)
	}
	return ok
}

// TestHeartbeatLearnsDespiteWireGuard: both NATs forget an idle mapping
// after 20 s, and WireGuard's own packets come between the heartbeats.
// They keep the mappings as a probe does, so a heartbeat an interval
// after the last probe could find the mappings younger than the interval
// and be answered at once, which undid the retry needed before it: the
// interval did not shrink. TestShortNATTimeout's timing, which failed so
// 2 runs in 8: the handshake WireGuard retried 5.1 s after the probing
// round (it did not complete the first), a ping of 3 s about 70 s after
// the round, WireGuard's keepalive 10 s after its last reply, and
// another ping 35 s after the first ended. Before, the interval stayed
// at 25 s, and the second ping's first packets were lost too when the
// first came 69 s after the round. Counted from the last packet either
// way, each heartbeat tests a mapping idle for the whole interval.
func TestHeartbeatLearnsDespiteWireGuard(t *testing.T) {
	const natTimeout = 20 * time.Second
	type packet struct {
		at   time.Duration // after the probing round
		from int           // 0: the leader
		data bool          // else a handshake message or a keepalive
	}
	// A ping of 3 s and its replies, and the keepalive after it.
	ping := func(at time.Duration) []packet {
		return []packet{{at, 0, true}, {at, 1, true}, {at + 3*time.Second, 0, true}, {at + 3*time.Second, 1, true}, {at + 13*time.Second, 0, false}}
	}
	handshake := []packet{{5100 * time.Millisecond, 0, false}, {5100 * time.Millisecond, 1, false}}
	for _, first := range []time.Duration{69 * time.Second, 72 * time.Second} {
		n := newNATPath(t, natTimeout)
		start := n.now
		for _, pk := range slices.Concat(handshake, ping(first), ping(first+38*time.Second)) {
			n.run(start.Add(pk.at).Sub(n.now))
			if !n.wireGuard(pk.from, pk.data) && pk.data {
				t.Errorf("first ping after %v: data lost %v after the round, the NAT's mapping expired", first, pk.at)
			}
		}
		// The follower takes the interval from a heartbeat after the
		// probes of its owner's silence check (tunnel/control), which
		// natPath leaves out: the leader's is what counts here.
		if hb := n.ends[0].p.Heartbeat(); hb >= natTimeout {
			t.Errorf("first ping after %v: leader's heartbeat %v, want under the NAT's %v", first, hb, natTimeout)
		}
	}
}

// Our own packets do not put the heartbeat off: WireGuard's persistent
// keepalives sent every 10 s into a path that died still leave it lost
// when the heartbeat, due 25 s after the last packet heard, goes
// unanswered.
func TestOwnPacketsDoNotPutOffHeartbeat(t *testing.T) {
	h := idlePath(true)
	heard := h.p.LastHeard()
	var ev Event
	for step := 1; ev == EventNone && h.now.Sub(heard) < time.Minute; step++ {
		h.now = h.now.Add(100 * time.Millisecond)
		if step%100 == 0 {
			h.p.SawTraffic(heard, h.now)
		}
		ev = h.p.Tick(h.now)
	}
	if limit := HeartbeatInterval + PathTimeout + retryInterval; ev != EventLost || h.now.Sub(heard) > limit {
		t.Errorf("dead path sent to every 10 s: %v after %v, want lost within %v", ev, h.now.Sub(heard), limit)
	}
}

// A heartbeat under way on a path that another replaces ends with it: the
// new path, just confirmed, is not lost when the old one's heartbeat has
// gone unanswered for PathTimeout.
func TestNewPathEndsHeartbeatUnderWay(t *testing.T) {
	h := idlePath(true)
	h.now = h.p.LastHeard().Add(HeartbeatInterval)
	h.p.Tick(h.now) // the heartbeat, unanswered
	h.now = h.now.Add(PathTimeout - time.Second)
	h.p.Start(h.now, []netip.AddrPort{lan}, PunchDuration)
	h.p.Tick(h.now)
	if h.answer(lan, time.Millisecond) != EventChosen {
		t.Fatal("the LAN path was not chosen")
	}
	for end := h.now.Add(5 * time.Second); h.now.Before(end); {
		h.now = h.now.Add(100 * time.Millisecond)
		if ev := h.p.Tick(h.now); ev != EventNone {
			t.Fatalf("the new path, confirmed %v ago: %v", h.now.Sub(h.p.Path().Since), ev)
		}
	}
}
