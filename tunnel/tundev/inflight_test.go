package tundev

import (
	"testing"
	"time"
)

func TestInflightWaitsForPacketsToLeave(t *testing.T) {
	f := newInflight()
	f.add(inflightLimit + 10)
	released := make(chan time.Duration, 1)
	start := time.Now()
	go func() { f.wait(); released <- time.Since(start) }()
	// Packets leave a few at a time, each within the stall limit: the
	// wait lasts until the count is under the limit.
	for range 11 {
		time.Sleep(inflightStall / 4)
		select {
		case d := <-released:
			t.Fatalf("wait returned after %v with %d held", d, f.n.Load())
		default:
		}
		f.done(1)
	}
	select {
	case <-released:
	case <-time.After(time.Second):
		t.Fatalf("wait still blocked with %d held", f.n.Load())
	}
}

func TestInflightDriftedCountStartsAfresh(t *testing.T) {
	f := newInflight()
	f.add(inflightLimit * 2) // packets that wireguard-go dropped: none will leave
	start := time.Now()
	f.wait()
	if d := time.Since(start); d < inflightStall || d > 20*inflightStall {
		t.Fatalf("wait took %v, want about %v", d, inflightStall)
	}
	if n := f.n.Load(); n != 0 {
		t.Fatalf("count %d after a stall, want 0", n)
	}
	f.done(5) // more leave than were counted: never below zero
	if n := f.n.Load(); n != 0 {
		t.Fatalf("count %d, want 0", n)
	}
}
