//go:build linux

package main

import (
	"fmt"
	"testing"
	"time"
)

// TestUDPBlockedStartWithinASecond: a peer on a network that lets only TCP
// out reaches its peer within a second of its start, both ways, three
// starts in a row: TCP to the rendezvous opens 300 ms after the first
// unanswered STUN request, not after 5 s.
func TestUDPBlockedStartWithinASecond(t *testing.T) {
	l := newLab(t, "ptub", "blocked", "easy")
	rvKey := l.startRendezvous()
	a := newPeer(t, "a1", "ptub0a", "100.64.0.1")
	b := newPeer(t, "b1", "ptub0b", "100.64.0.2")
	l.up(b, a, rvKey)
	conf := l.writeConfig(a, b, rvKey)
	for start := 1; start <= 3; start++ {
		t0 := time.Now()
		pr := l.startPeer(a, conf, fmt.Sprintf("%s-%d", a.iface, start))
		for _, dir := range [][2]*peerSpec{{a, b}, {b, a}} {
			took := l.answeredWithin(dir[0], dir[1], t0, 3*time.Second)
			t.Logf("start %d: %s → %s answered %v after the start", start, dir[0].host, dir[1].host, took.Round(time.Millisecond))
			if took > time.Second {
				t.Errorf("start %d: %s → %s answered %v after the start, want within 1 s", start, dir[0].host, dir[1].host, took)
			}
		}
		st, err := l.status(a)
		if err != nil || len(st.Rendezvous) == 0 || st.Rendezvous[0].TCP == "" || st.Rendezvous[0].TCPReason == "" {
			t.Errorf("start %d: status does not show the TCP link and why: %+v %v", start, st, err)
		}
		if err := pr.stop(); err != nil {
			t.Fatalf("start %d: down: %v", start, err)
		}
	}
}

// answeredWithin pings to's address from from, one ping at a time, each
// waiting up to 200 ms, until one is answered, and returns how long after
// t0 that was; it fails the test after limit.
func (l *lab) answeredWithin(from, to *peerSpec, t0 time.Time, limit time.Duration) time.Duration {
	l.t.Helper()
	for time.Since(t0) < limit {
		if l.cmd(from.host, "ping", "-n", "-c", "1", "-W", "0.2", to.addr).Run() == nil {
			return time.Since(t0)
		}
	}
	l.t.Fatalf("%s → %s: no answer within %v of the start", from.host, to.host, limit)
	return 0
}
