package nat

import "time"

// How the heartbeat's interval follows what the path's NATs keep. A
// heartbeat that needed a retry may mean a NAT forgot the mapping within
// the interval, or only that one packet was lost or answered late, on a
// lossy link or a loaded host. Only a retry needed twice in a row, at the
// same interval, shrinks it (by a third, down to MinHeartbeatInterval);
// after regrowAfter with every heartbeat answered at once it grows back a
// step, up to HeartbeatInterval, but not to an interval that lost
// mappings within forgetTooLong. So a lost packet costs nothing; a NAT
// that forgets after 20 s is learned in two heartbeats and tried again
// once a day; and a tunnel that runs for months on a lossy link does not
// ratchet down to probing every 5 s.
const (
	regrowAfter   = time.Hour
	forgetTooLong = 24 * time.Hour
)

// heartbeat is the interval at which an idle path is probed, and what the
// heartbeats have shown of it.
type heartbeat struct {
	level   int  // the interval is HeartbeatInterval cut by a third this many times
	out     bool // a heartbeat is under way, not yet answered
	retried bool // and it needed a retry
	misses  int  // heartbeats in a row, at this level, that needed a retry
	// steadySince: since then every heartbeat was answered at once.
	steadySince time.Time
	// tooLong lost mappings twice in a row at tooLongAt: not grown back
	// to until forgetTooLong has passed.
	tooLong   int
	tooLongAt time.Time
}

// intervalAt is the interval of level.
func intervalAt(level int) time.Duration {
	d := HeartbeatInterval
	for range level {
		d = d * 2 / 3
	}
	return max(d, MinHeartbeatInterval)
}

func (h *heartbeat) interval() time.Duration { return intervalAt(h.level) }

// sent notes a heartbeat or its retry.
func (h *heartbeat) sent(retry bool) {
	h.out = true
	h.retried = h.retried || retry
}

// answered notes the peer heard on the path at now, ending a heartbeat
// under way, if one is.
func (h *heartbeat) answered(now time.Time) {
	if !h.out {
		return
	}
	retried := h.retried
	h.out, h.retried = false, false
	switch {
	case retried && h.misses > 0:
		h.tooLong, h.tooLongAt = h.level, now
		if h.interval() > MinHeartbeatInterval {
			h.set(h.level+1, now)
		}
		h.misses = 0
	case retried:
		h.misses, h.steadySince = 1, now
	default:
		h.misses = 0
		if h.steadySince.IsZero() {
			h.steadySince = now
		}
		tooLongNow := !h.tooLongAt.IsZero() && now.Sub(h.tooLongAt) < forgetTooLong && h.level-1 <= h.tooLong
		if h.level > 0 && now.Sub(h.steadySince) >= regrowAfter && !tooLongNow {
			h.set(h.level-1, now)
		}
	}
}

// learn takes the leader's interval, heard as silent between its
// heartbeats: the longest level within it.
func (h *heartbeat) learn(silent time.Duration, now time.Time) {
	level := 0
	for intervalAt(level) > silent && intervalAt(level) > MinHeartbeatInterval {
		level++
	}
	if level > h.level {
		h.set(level, now)
	}
}

// set makes level the heartbeat's, as of now.
func (h *heartbeat) set(level int, now time.Time) {
	h.level, h.misses, h.steadySince = level, 0, now
}
