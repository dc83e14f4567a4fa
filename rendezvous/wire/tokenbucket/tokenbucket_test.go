package tokenbucket

import (
	"testing"
	"time"
)

// takeAll takes single tokens from b at now until it refuses, and says
// how many it gave.
func takeAll(b *Bucket, now time.Time, rate, burst float64) int {
	n := 0
	for b.Take(now, rate, burst, 1) {
		n++
	}
	return n
}

// TestBurstThenRate: a bucket gives its burst at once, then rate a
// second, and a long pause refills it to the burst, not beyond.
func TestBurstThenRate(t *testing.T) {
	now := time.Unix(1000, 0)
	for name, b := range map[string]Bucket{"zero": {}, "full": Full(20, now)} {
		if n := takeAll(&b, now, 10, 20); n != 20 {
			t.Errorf("%s: %d at once, want the burst of 20", name, n)
		}
		if n := takeAll(&b, now.Add(500*time.Millisecond), 10, 20); n != 5 {
			t.Errorf("%s: %d after 0.5 s at 10 a second, want 5", name, n)
		}
		if n := takeAll(&b, now.Add(time.Hour), 10, 20); n != 20 {
			t.Errorf("%s: %d after an hour, want the burst of 20", name, n)
		}
	}
}

// TestStartsFull: Full holds its burst before any fill; the zero Bucket
// holds nothing until its first fill, which fills it whenever it comes.
func TestStartsFull(t *testing.T) {
	now := time.Unix(1000, 0)
	full := Full(8, now)
	if full.Tokens() != 8 || full.FilledAt() != now {
		t.Fatalf("Full(8): %v tokens filled at %v, want 8 at %v", full.Tokens(), full.FilledAt(), now)
	}
	var zero Bucket
	if zero.Tokens() != 0 || !zero.FilledAt().IsZero() {
		t.Fatalf("zero Bucket: %v tokens filled at %v, want none, never", zero.Tokens(), zero.FilledAt())
	}
	// Even at a rate too slow to refill since the zero time.
	zero.Fill(now, 1e-12, 8)
	if zero.Tokens() != 8 || zero.FilledAt() != now {
		t.Fatalf("zero Bucket's first fill: %v tokens at %v, want 8 at %v", zero.Tokens(), zero.FilledAt(), now)
	}
}

// TestCostAndClock: a cost over what is held takes nothing; Spend takes
// what the caller checked; a clock that goes back adds nothing and does
// not move the last fill back.
func TestCostAndClock(t *testing.T) {
	now := time.Unix(1000, 0)
	b := Full(100, now)
	if b.Take(now, 10, 100, 101) || b.Tokens() != 100 {
		t.Fatalf("a cost of 101 from 100: taken, or %v left", b.Tokens())
	}
	if !b.Take(now, 10, 100, 60) || b.Tokens() != 40 {
		t.Fatalf("a cost of 60 from 100: refused, or %v left", b.Tokens())
	}
	b.Spend(40)
	if b.Tokens() != 0 {
		t.Fatalf("%v left after spending all", b.Tokens())
	}
	b.Fill(now.Add(-time.Minute), 10, 100)
	if b.Tokens() != 0 || b.FilledAt() != now {
		t.Fatalf("a fill a minute back: %v tokens, filled at %v; want 0 at %v", b.Tokens(), b.FilledAt(), now)
	}
	b.Fill(now.Add(2*time.Second), 10, 100)
	if b.Tokens() != 20 {
		t.Fatalf("%v tokens 2 s on at 10 a second, want 20", b.Tokens())
	}
}
