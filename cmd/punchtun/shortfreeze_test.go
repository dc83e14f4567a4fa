//go:build linux

package main

import (
	"fmt"
	"testing"
	"time"
)

// TestShortFreezeStaysDirect: the process of either side of an easy/hard
// pair frozen (SIGSTOP) for 5 s — far shorter than the NATs' 30-s UDP
// timeouts, so every mapping of the direct path is still there — while
// pings flow both ways. After SIGCONT the pair must be direct again (both
// sides) within a second. The peer that kept running loses the direct
// path to its silence meanwhile; that is expected, the relay carries the
// pings. Before, the frozen side took its wake-up for a new network and
// punched afresh, and the hard side closed the birthday socket the path
// led to when it lost the path: direct again after 9–12 s.
func TestShortFreezeStaysDirect(t *testing.T) {
	t.Parallel()
	const freeze = 5 * time.Second
	l, a, b, sides := freezeLab(t, "ptsf")
	other := map[*peerSpec]*peerSpec{a: b, b: a}
	l.startPinger(a, b)
	l.startPinger(b, a)
	for _, frozen := range append(sides, sides...) { // each side twice
		// Outside the quiet section: the moment between two sections
		// lets other tests' heavy steps waiting take their turn.
		l.waitPath(a, "direct")
		l.waitPath(b, "direct")
		// The freeze is short enough to be part of the measurement: quiet
		// from before the SIGSTOP, so that no wait for quiet lengthens it.
		quiet(t, func() {
			t0, out, in := l.freeze(frozen, other[frozen.p], freeze)
			direct := l.directAgain(t0, 20*time.Second, a, b)
			t.Logf("%s side frozen %v: answered %v → / %v ← after SIGCONT, direct again after %v",
				frozen.nat, freeze, out.Round(time.Millisecond), in.Round(time.Millisecond), direct.Round(time.Millisecond))
			if direct > time.Second {
				t.Errorf("%s side frozen %v: direct again after %v, want within 1 s", frozen.nat, freeze, direct)
			}
		})
	}
}

// directAgain waits until every peer of ps is on the direct path and has
// stayed there for 2 s, and returns how long after t0 the last of them
// went back to it, from the path history in status (0: none left it after
// t0).
func (l *lab) directAgain(t0 time.Time, limit time.Duration, ps ...*peerSpec) time.Duration {
	l.t.Helper()
	const settle = 2 * time.Second
	var took time.Duration
	eventually(l.t, limit, "direct again, for 2 s", func() error {
		took = 0
		for _, p := range ps {
			st, err := l.status(p)
			if err != nil {
				return err
			}
			ps := st.Peers[0]
			if ps.Path != "direct" {
				return fmt.Errorf("%s: path %s", p.iface, ps.Path)
			}
			if h := ps.History; len(h) > 0 {
				last := h[len(h)-1].Time
				if time.Since(last) < settle {
					return fmt.Errorf("%s: direct for %v only", p.iface, time.Since(last))
				}
				took = max(took, last.Sub(t0))
			}
		}
		return nil
	})
	return took
}
