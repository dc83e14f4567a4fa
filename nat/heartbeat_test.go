package nat

import (
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
