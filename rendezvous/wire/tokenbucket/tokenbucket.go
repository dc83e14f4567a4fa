// Package tokenbucket is the token bucket that paces both sides: the
// rendezvous's rate limits, publications and fan-out, and a peer's gossip
// gate and what it sends. It lives beside the protocol because both
// sides, which share nothing else but the protocol, use it.
package tokenbucket

import "time"

// Bucket is a token bucket. Its rate (tokens a second) and burst (the
// most it holds) are the caller's, given at each use, so that a table of
// many buckets holds them once. Not safe for concurrent use: its owner
// keeps it under its own lock or goroutine.
//
// A bucket starts full, one of two ways, which its maker chooses: Full
// makes one that holds burst at once (for a caller that reads Tokens
// before the first Fill); the zero Bucket fills to burst at its first
// Fill (for a budget kept in a struct made before the clock is at hand).
type Bucket struct {
	tokens float64
	at     time.Time // of the last fill; zero: never filled
}

// Full is a bucket holding burst tokens at now.
func Full(burst float64, now time.Time) Bucket {
	return Bucket{tokens: burst, at: now}
}

// Fill adds what rate brought since the last fill, up to burst; the
// first fill of a zero Bucket fills it.
func (b *Bucket) Fill(now time.Time, rate, burst float64) {
	switch {
	case b.at.IsZero():
		b.tokens, b.at = burst, now
	case now.After(b.at):
		b.tokens = min(burst, b.tokens+now.Sub(b.at).Seconds()*rate)
		b.at = now
	}
}

// Take fills b and takes cost from it if it holds that much.
func (b *Bucket) Take(now time.Time, rate, burst, cost float64) bool {
	b.Fill(now, rate, burst)
	if b.tokens < cost {
		return false
	}
	b.tokens -= cost
	return true
}

// Tokens is what b held at its last fill, less what was spent since.
func (b *Bucket) Tokens() float64 { return b.tokens }

// Spend takes cost, which the caller found b holds (Tokens): for a cost
// checked against more than one bucket before any is spent.
func (b *Bucket) Spend(cost float64) { b.tokens -= cost }

// FilledAt is when b was last filled (zero: never).
func (b *Bucket) FilledAt() time.Time { return b.at }
