package control

import "time"

// Noticing a freeze or a sleep from the ticks' times, after which every
// NAT mapping and session the peers had with us may be gone
// (Control.resumed).

// resumeGap: a tick this much later than its 50 ms — or a wall clock
// that moved this much further than the monotonic one, which stops while
// the machine sleeps — means the process was frozen (SIGSTOP, a paused VM
// or container) or the machine slept.
const resumeGap = 2 * time.Second

// frozeFor reports whether the ticks at last and now, the one after it,
// are apart by a freeze or sleep, and for about how long; the first tick
// (last zero) is none.
func frozeFor(last, now time.Time) (time.Duration, bool) {
	if last.IsZero() {
		return 0, false
	}
	mono := now.Sub(last)
	wall := now.Round(0).Sub(last.Round(0)) // Round(0) drops the monotonic reading
	if mono < resumeGap && wall-mono < resumeGap {
		return 0, false
	}
	return max(mono, wall), true
}
