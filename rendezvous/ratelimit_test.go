package rendezvous

import (
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

func TestLimiterBurstThenRate(t *testing.T) {
	l := newLimiter[int](10, 100) // burst 20
	now := time.Unix(1000, 0)
	n := 0
	for i := 0; i < 100; i++ {
		if l.allow(1, now) {
			n++
		}
	}
	if n != 20 {
		t.Fatalf("allowed %d at once, want the burst of 20", n)
	}
	if !l.allow(2, now) {
		t.Fatal("another key shares the first one's bucket")
	}
	// 10 per second: half a second later, 5 more.
	now = now.Add(500 * time.Millisecond)
	n = 0
	for i := 0; i < 100; i++ {
		if l.allow(1, now) {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("allowed %d after 0.5 s, want 5", n)
	}
	// A long pause refills to the burst, not beyond.
	now = now.Add(time.Hour)
	n = 0
	for i := 0; i < 100; i++ {
		if l.allow(1, now) {
			n++
		}
	}
	if n != 20 {
		t.Fatalf("allowed %d after an hour, want 20", n)
	}
}

func TestLimiterUnlimited(t *testing.T) {
	l := newLimiter[int](-1, 10)
	for i := 0; i < 1000; i++ {
		if !l.allow(i, time.Now()) {
			t.Fatal("a negative rate limited")
		}
	}
	if l.len() != 0 {
		t.Fatal("an unlimited limiter keeps buckets")
	}
}

// TestLimiterTableBounded floods a limiter from more sources than its table
// holds: it stays at its bound, and forgets refilled buckets first.
func TestLimiterTableBounded(t *testing.T) {
	l := newLimiter[int](1, 64)
	now := time.Unix(1000, 0)
	for i := 0; i < 10_000; i++ {
		l.allow(i, now)
		if l.len() > 64 {
			t.Fatalf("%d buckets, bound 64", l.len())
		}
	}
	// Later, the refilled buckets are swept when room is needed: the
	// active source keeps its (empty) bucket through the sweep.
	now = now.Add(time.Minute)
	for l.allow(-1, now) {
	}
	l.allow(-2, now)
	if l.len() != 2 {
		t.Fatalf("%d buckets after the sweep, want 2", l.len())
	}
	if l.allow(-1, now) {
		t.Fatal("the sweep refilled an empty bucket")
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.9:1":                "203.0.113.9",
		"[::ffff:203.0.113.9]:1":       "203.0.113.9",
		"[2001:db8:1:2:3:4:5:6]:51820": "2001:db8:1:2::",
	} {
		if got := sourceKey(netip.MustParseAddrPort(in)); got != netip.MustParseAddr(want) {
			t.Errorf("sourceKey(%s) = %v, want %s", in, got, want)
		}
	}
}

func TestKeyCache(t *testing.T) {
	priv, _ := key.NewPrivate()
	secret, _ := wire.NewSecret(priv)
	c := newKeyCache(secret, 4, 3) // burst 6 new keys
	now := time.Unix(1000, 0)
	var peers []key.Private
	for i := 0; i < 6; i++ {
		p, _ := key.NewPrivate()
		peers = append(peers, p)
		if !c.reserve(now) {
			t.Fatalf("new key %d refused within the burst", i)
		}
		if got, err := c.compute(p.Public()); err != nil || got != wire.NewSharedKey(p, priv.Public()) {
			t.Fatal("computed key differs from the shared key")
		}
	}
	if c.len() != 4 {
		t.Fatalf("cache holds %d keys, bound 4", c.len())
	}
	// The most recent keys are cached; the oldest was evicted.
	if got, ok := c.cached(peers[5].Public()); !ok || got != wire.NewSharedKey(peers[5], priv.Public()) {
		t.Fatal("the newest key is not cached")
	}
	if _, ok := c.cached(peers[0].Public()); ok {
		t.Fatal("the oldest key is still cached, bound 4")
	}
	// The budget is spent, and refills.
	if c.reserve(now) {
		t.Fatal("a seventh new key within the same instant, burst 6")
	}
	if !c.reserve(now.Add(time.Second)) {
		t.Fatal("no new key a second later")
	}
}

func TestSnake(t *testing.T) {
	for in, want := range map[string]string{"STUN": "stun", "DropRateLimited": "drop_rate_limited", "RelayBytes": "relay_bytes"} {
		if got := snake(in); got != want {
			t.Errorf("snake(%s) = %s, want %s", in, got, want)
		}
	}
}
