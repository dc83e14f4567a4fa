package rendezvous

import (
	"net/netip"
	"sync"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/tokenbucket"
)

// The rate limiter: a table of token buckets (rendezvous/wire/tokenbucket,
// which also pace a network's publications and its fan-out's bytes), one
// per source or key.

// limiter is a table of token buckets, one per K, bounded to max entries.
// A bucket holds up to burst tokens and gains rate per second; a bucket
// that has refilled is the same as no bucket, so such entries are swept
// away, and when the table is full anyway an arbitrary entry makes room:
// memory stays bounded, and a flood from many addresses costs it its
// precision: a source whose bucket was dropped starts again with a full one.
type limiter[K comparable] struct {
	rate, burst float64
	max         int

	mu        sync.Mutex
	buckets   map[K]*tokenbucket.Bucket
	lastSweep time.Time
}

// newLimiter returns a limiter of rate per second (burst 2×rate, at least
// 1); a rate of 0 or less allows everything.
func newLimiter[K comparable](rate float64, max int) *limiter[K] {
	return &limiter[K]{rate: rate, burst: max64(2*rate, 1), max: max, buckets: make(map[K]*tokenbucket.Bucket)}
}

func max64(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}

// allow takes a token from k's bucket, reporting whether it had one.
func (l *limiter[K]) allow(k K, now time.Time) bool {
	if l == nil || l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.makeRoom(now)
		}
		full := tokenbucket.Full(l.burst, now)
		b = &full
		l.buckets[k] = b
	}
	return b.Take(now, l.rate, l.burst, 1)
}

// makeRoom sweeps the buckets that have refilled (at most once a second),
// then, if the table is still full, drops one arbitrary bucket.
func (l *limiter[K]) makeRoom(now time.Time) {
	if now.Sub(l.lastSweep) >= time.Second {
		l.lastSweep = now
		full := time.Duration(l.burst / l.rate * float64(time.Second))
		for k, b := range l.buckets {
			if now.Sub(b.FilledAt()) >= full {
				delete(l.buckets, k)
			}
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.max {
			break
		}
		delete(l.buckets, k)
	}
}

// len is the number of buckets held.
func (l *limiter[K]) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// sourceKey is what a source is limited by: its IPv4 address, or its IPv6
// /64, since one host commonly holds a whole /64.
func sourceKey(ap netip.AddrPort) netip.Addr {
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}
