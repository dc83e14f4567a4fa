//go:build linux

package main

import (
	"encoding/json"
	"syscall"
	"testing"
	"time"
)

// TestStoppedTCPPeerStallsNobody: b1 sits behind a network that blocks UDP
// and reaches a1 over relay-tcp. Its process is stopped (a laptop's lid
// closing) while a1 floods it through the relay. The rendezvous must go on
// answering everyone else at once — STUN from a public host within a
// second, every time — and an unrelated pair must connect as fast as ever;
// b1, continued, must be back. Before each TCP link had its own writer,
// the rendezvous's UDP reader blocked in writes to b1's full stream: STUN
// went unanswered and new pairs fell back to TCP after 5 s.
// Not parallel: its flood loads the machine, and its bounds need the
// machine to themselves (serial tests run before the parallel ones).
func TestStoppedTCPPeerStallsNobody(t *testing.T) {
	l := newLab(t, "pts", "easy", "blocked")
	requireTools(t, "socat", "socat")
	rv, rvKey := l.startRendezvousProc()
	a := newPeer(t, "a1", "ptsa0", "100.64.0.1")
	b := newPeer(t, "b1", "ptsb0", "100.64.0.2")
	l.up(a, b, rvKey)
	pb := l.up(b, a, rvKey)
	l.waitPath(b, "relay-tcp")
	l.waitPath(a, "relay")
	l.ping(a, b)

	pb.cmd.Process.Signal(syscall.SIGSTOP)
	continued := false
	cont := func() {
		if !continued {
			continued = true
			pb.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(cont) // stop() must be able to end it
	// 1200-byte datagrams to b1 as fast as a1's tunnel takes them.
	flood := l.start(a.host, "flood-to-b1", "timeout", "20", "socat", "-u", "-b", "1200",
		"OPEN:/dev/zero", "UDP-SENDTO:"+b.addr+":9")

	// For 8 s: STUN from pub, twice a second, each answered within a second.
	for i := range 16 {
		start := time.Now()
		out, err := l.cmd("pub", l.bin, "netcheck", "--rendezvous", rendezvousAddr, "--json").Output()
		took := time.Since(start)
		var res struct {
			UDP bool `json:"udp"`
		}
		if err != nil || json.Unmarshal(out, &res) != nil || !res.UDP {
			t.Fatalf("netcheck %d from pub while b1 is stopped: %v: %s", i, err, out)
		}
		if took > time.Second {
			t.Fatalf("netcheck %d from pub took %v while b1 is stopped, want under 1 s", i, took)
		}
		time.Sleep(time.Until(start.Add(500 * time.Millisecond)))
	}

	// A new pair of unrelated peers connects as fast as without b1.
	c := newPeer(t, "a2", "ptsc0", "100.64.1.1")
	d := newPeer(t, "pub", "ptsd0", "100.64.1.2")
	start := time.Now()
	l.up(c, d, rvKey)
	l.up(d, c, rvKey)
	if first := l.firstPing(c, d, start); first > 2*time.Second {
		t.Errorf("a new pair took %v to its first ping while b1 is stopped, want under 2 s", first)
	}
	l.waitPath(c, "direct")

	flood.stop()
	stats := rv.stats()
	if stats["drop_tcp_queue_full"] == 0 {
		t.Errorf("no relayed frame counted as dropped for b1's full TCP queue: %s", counts(stats))
	}
	// Continued, b1 reconnects (the rendezvous closed its stalled link)
	// and the tunnel works again.
	cont()
	eventually(t, 20*time.Second, "ping to b1 after it continued", func() error {
		return l.cmd(a.host, "ping", "-c", "1", "-W", "1", b.addr).Run()
	})
}
