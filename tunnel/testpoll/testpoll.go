// Package testpoll is for tests that wait on a running system — the lab's
// peers in their namespaces (cmd/punchtun), the rootless harness's
// (tunnel/userspace) — to reach a state: they poll for it with a
// deadline, rather than sleep for a time it usually takes.
package testpoll

import (
	"testing"
	"time"
)

// Interval is how long Eventually waits between two tries.
const Interval = 50 * time.Millisecond

// Eventually calls cond until it returns nil, and fails t with what and
// cond's last error if it has not by within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(Interval)
	}
}
