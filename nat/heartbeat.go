package nat

import "time"

// How the heartbeat's interval follows what the path's NATs keep. A
// heartbeat that needed a retry may mean a NAT forgot the mapping within
// the interval, or only that one packet was lost or answered late, on a
// lossy link or a loaded host. One answered at once shows that the NATs
// keep an idle mapping that long only if it found the path idle both ways
// for the interval (Punch.beat). Only a retry needed twice in a row, at
// the same interval, shrinks it (by a third, down to MinHeartbeatInterval);
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
	level   int       // the interval is HeartbeatInterval cut by a third this many times
	out     bool      // a heartbeat is under way, not yet answered
	since   time.Time // since then
	idle    bool      // it found the path idle both ways for the interval
	retried bool      // and it needed a retry
	misses  int       // heartbeats in a row, at this level, that needed a retry
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

// sent notes a heartbeat sent at now on a path idle both ways for the
// interval or not, or its retry if one is under way.
func (h *heartbeat) sent(now time.Time, idle bool) {
	if h.out {
		h.retried = true
		return
	}
	h.out, h.since, h.idle = true, now, idle
}

// drop ends a heartbeat under way, unanswered, as one that says nothing
// of the NATs: its path is gone.
func (h *heartbeat) drop() { h.out, h.retried = false, false }

// answered notes the peer heard on the path at now, ending a heartbeat
// under way, if one is.
func (h *heartbeat) answered(now time.Time) {
	if !h.out {
		return
	}
	retried := h.retried
	h.out, h.retried = false, false
	switch {
	case !retried && !h.idle:
		// Other packets kept the mappings: nothing learned.
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

// Heartbeat is the interval at which an idle path is probed, as learned
// from the NATs on it (see HeartbeatInterval).
func (p *Punch) Heartbeat() time.Duration { return p.heartbeat.interval() }

// HeartbeatState is where a path's heartbeat stands, for a debug log of
// what each step did to it.
type HeartbeatState struct {
	Interval time.Duration
	Out      bool // a heartbeat is under way
	Retried  bool // and needed a retry
	Misses   int  // heartbeats in a row at Interval that needed one
}

// HeartbeatState returns where the heartbeat stands.
func (p *Punch) HeartbeatState() HeartbeatState {
	h := &p.heartbeat
	return HeartbeatState{Interval: h.interval(), Out: h.out, Retried: h.retried, Misses: h.misses}
}

// ResetHeartbeat forgets what was learned of the NATs on the path: the
// host moved to another network.
func (p *Punch) ResetHeartbeat() { p.heartbeat = heartbeat{} }

// beatDue is how long the path may stay silent before this side probes it.
func (p *Punch) beatDue() time.Duration {
	if p.leader {
		return p.heartbeat.interval()
	}
	return p.heartbeat.interval() + followerDelay
}

// heardOnPath notes an authenticated packet from the peer on the path,
// which answers a heartbeat under way (see heartbeat).
func (p *Punch) heardOnPath(now time.Time) {
	p.heartbeat.answered(now)
	p.lastHeard = now
}

// beat probes the path when its heartbeat is due at now, and again every
// retryInterval while unanswered; unanswered for PathTimeout, the path is
// lost. A heartbeat is due when nothing came from the peer for the
// interval: a WireGuard packet, a keepalive or a handshake too, shows the
// path alive and keeps the NATs' mappings as an answer does, so one
// counted from the last probe only would find the mappings younger than
// the interval, be answered at once whatever the NATs keep, and undo the
// retry needed before it. Our own packets do not put it off, since they
// may go nowhere on a dead path; a heartbeat after them that is answered
// at once shows nothing.
func (p *Punch) beat(now time.Time) Event {
	hb := &p.heartbeat
	if hb.out && now.Sub(hb.since) > PathTimeout {
		return p.lose()
	}
	if (hb.out || now.Sub(latest(p.lastHeard, p.lastReceived)) >= p.beatDue()) && now.Sub(p.lastPing) >= retryInterval {
		hb.sent(now, now.Sub(latest(p.lastHeard, p.lastTraffic)) >= hb.interval())
		p.ping(p.path.Addr, now)
	}
	return EventNone
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// pingedOnPath notes a probe from the peer on the path at now. A
// follower takes the leader's interval from one that came after a
// silence: the leader's heartbeat, at the interval it learned, if the
// tunnel was idle throughout; else some other probe.
func (p *Punch) pingedOnPath(now time.Time) {
	silent := now.Sub(p.lastHeard)
	if !p.leader && p.lastData.Before(p.lastHeard) && silent >= MinHeartbeatInterval && silent < p.heartbeat.interval() {
		p.heartbeat.learn(silent, now)
	}
	p.heardOnPath(now)
}

// SawData tells the Punch when WireGuard last sent or got anything but a
// keepalive (data or a handshake), so that a follower learns the leader's
// interval only from probes that came after an idle silence: heartbeats,
// not the probes the leader's owner sends when its WireGuard sent and
// heard nothing back.
func (p *Punch) SawData(at time.Time) {
	if at.After(p.lastData) {
		p.lastData = at
	}
}

// SawTraffic tells the Punch when the owner last got a packet from the
// peer on the path, and last sent or got one, WireGuard's keepalives and
// handshakes included (see beat).
func (p *Punch) SawTraffic(received, either time.Time) {
	p.lastReceived = latest(p.lastReceived, received)
	p.lastTraffic = latest(p.lastTraffic, either)
}
