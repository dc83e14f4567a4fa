//go:build linux

package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStopAfterReintroduction: the hard side of a birthday-punched path is
// introduced again while the round's winning socket carries the path (the
// peer's registration changed: a new local address), then stopped. It must
// keep the path and exit within seconds, by itself. A new round used to
// replace the winner without closing it: the path broke (on that code this
// test's second ping fails), the winner's reader never ended, and the stop
// waited for it forever (the soak's last SIGTERM left the hard-side peer
// running).
func TestStopAfterReintroduction(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptsr", "easy", "hard")
	l.logLevel = "debug" // the second introduction is logged at debug
	rvKey := l.startRendezvous()
	a, b := newPeer(t, "a1", "ptsra", "10.97.0.1"), newPeer(t, "b1", "ptsrb", "10.97.0.2")
	l.up(a, b, rvKey)
	pb := l.up(b, a, rvKey)
	l.waitPath(a, "direct")
	l.waitPath(b, "direct")
	l.ping(a, b)

	// A second round may start once the first one's backoff (10 s) has
	// passed: wait for that, counted from the round's log line.
	started := logTime(t, pb.log, `msg="birthday punching"`)
	time.Sleep(time.Until(started.Add(11 * time.Second)))
	introductions := func() int {
		log, _ := os.ReadFile(pb.log)
		return len(regexp.MustCompile(`msg=punching |msg="introduced again`).FindAll(log, -1))
	}
	before := introductions()
	// A new local address changes b's registration: the rendezvous
	// introduces the pair again.
	l.run(b.host, "sh", "-c", "ip link add ptsrv0 type veth peer name ptsrv1 && ip addr add 172.31.97.1/24 dev ptsrv0 && ip link set ptsrv1 up && ip link set ptsrv0 up")
	eventually(t, 10*time.Second, "b introduced again", func() error {
		if n := introductions(); n <= before {
			return fmt.Errorf("%d introductions logged", n)
		}
		return nil
	})
	l.ping(a, b)

	start := time.Now()
	err := pb.stop()
	if took := time.Since(start); took > 5*time.Second || err != nil {
		log, _ := os.ReadFile(pb.log)
		t.Fatalf("the hard side took %v to stop (%v); log tail:\n%s", took.Round(time.Millisecond), err, tail(string(log), 15))
	}
}

// logTime returns the time of the first line of the log at path that
// contains what.
func logTime(t *testing.T, path, what string) time.Time {
	t.Helper()
	log, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(log), "\n") {
		if !strings.Contains(line, what) {
			continue
		}
		if m := regexp.MustCompile(`^time=(\S+)`).FindStringSubmatch(line); m != nil {
			if ts, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
				return ts
			}
		}
	}
	t.Fatalf("no %s in %s", what, path)
	return time.Time{}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
