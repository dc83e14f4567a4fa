package rendezvous

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Defaults of the bounds in Config.
const (
	// DefaultMaxPeers bounds live registrations.
	DefaultMaxPeers = 100_000
	// DefaultSourceRate is the packets per second one source address may
	// have answered or opened (STUN and control messages), with a burst of
	// twice as many. A peer sends about one registration and a few STUN
	// requests every 25 s; the rest is room for many peers behind one
	// carrier-grade NAT.
	DefaultSourceRate = 50
	// DefaultKeyRate is the authenticated messages per second one key may
	// have acted on, with a burst of twice as many.
	DefaultKeyRate = 10
	// DefaultNewKeyRate bounds the Curve25519 multiplications per second
	// spent on keys that are neither registered nor cached: the one cost a
	// flood from spoofed addresses and made-up keys can impose. One takes
	// about 37 µs here, so 20000 a second is at most three quarters of one
	// core, done outside the server's lock: the other core keeps serving
	// registered peers, and a rendezvous that restarts can take 20000 new
	// registrations a second.
	DefaultNewKeyRate = 20000
	// limiterEntries bounds each rate limiter's table; sharedKeyCacheSize
	// bounds the cache of shared keys of unregistered senders.
	limiterEntries     = 1 << 16
	sharedKeyCacheSize = 4096
)

// MaxControlLen is the longest control message a peer can have a reason to
// send: a registration with the most candidates and wanted keys. Longer
// ones are dropped before any work is spent on them.
const MaxControlLen = wire.Overhead + 8 + 1 + 1 + wire.MaxCandidates*18 + 2 + wire.MaxWants*key.Len + 32 + 2 + wire.MaxCert

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
	buckets   map[K]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// fill adds what rate brought since the last fill, up to burst.
func (b *bucket) fill(now time.Time, rate, burst float64) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
		b.at = now
	}
}

// take fills b and takes cost from it if it holds that much.
func (b *bucket) take(now time.Time, rate, burst, cost float64) bool {
	b.fill(now, rate, burst)
	if b.tokens < cost {
		return false
	}
	b.tokens -= cost
	return true
}

// newLimiter returns a limiter of rate per second (burst 2×rate, at least
// 1); a rate of 0 or less allows everything.
func newLimiter[K comparable](rate float64, max int) *limiter[K] {
	return &limiter[K]{rate: rate, burst: max64(2*rate, 1), max: max, buckets: make(map[K]*bucket)}
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
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[k] = b
	}
	return b.take(now, l.rate, l.burst, 1)
}

// makeRoom sweeps the buckets that have refilled (at most once a second),
// then, if the table is still full, drops one arbitrary bucket.
func (l *limiter[K]) makeRoom(now time.Time) {
	if now.Sub(l.lastSweep) >= time.Second {
		l.lastSweep = now
		full := time.Duration(l.burst / l.rate * float64(time.Second))
		for k, b := range l.buckets {
			if now.Sub(b.at) >= full {
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

// keyCache remembers the shared keys of senders that are not registered,
// least recently used first out, so that repeated messages naming one key
// cost one Curve25519 multiplication, not one each. Computing a missing key
// takes a token from newKeys, a limit shared by all senders.
type keyCache struct {
	secret  wire.Secret
	max     int
	newKeys *limiter[struct{}]

	mu    sync.Mutex
	order *list.List // of *cachedKey, most recent in front
	byKey map[key.Key]*list.Element
}

type cachedKey struct {
	peer   key.Key
	shared wire.SharedKey
}

func newKeyCache(secret wire.Secret, max int, newKeyRate float64) *keyCache {
	return &keyCache{
		secret:  secret,
		max:     max,
		newKeys: newLimiter[struct{}](newKeyRate, 1),
		order:   list.New(),
		byKey:   make(map[key.Key]*list.Element),
	}
}

// cached returns the shared key with peer if it is cached.
func (c *keyCache) cached(peer key.Key) (shared wire.SharedKey, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byKey[peer]; e != nil {
		c.order.MoveToFront(e)
		return e.Value.(*cachedKey).shared, true
	}
	return shared, false
}

// reserve takes a token from the budget for new keys, if there is one.
func (c *keyCache) reserve(now time.Time) bool {
	return c.newKeys.allow(struct{}{}, now)
}

// compute computes the shared key with peer and caches it; the caller has
// reserved it.
func (c *keyCache) compute(peer key.Key) (wire.SharedKey, error) {
	shared, err := c.secret.SharedKey(peer)
	if err != nil {
		return shared, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byKey[peer]; e != nil { // computed meanwhile by another goroutine
		c.order.MoveToFront(e)
		return shared, nil
	}
	c.byKey[peer] = c.order.PushFront(&cachedKey{peer: peer, shared: shared})
	for c.order.Len() > c.max {
		old := c.order.Remove(c.order.Back()).(*cachedKey)
		delete(c.byKey, old.peer)
	}
	return shared, nil
}

func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// initLimits sets up the bounds of cfg, or their defaults.
func (s *Server) initLimits(cfg Config) {
	orDefault := func(v, def float64) float64 {
		if v == 0 {
			return def
		}
		return v
	}
	s.maxPeers = cfg.MaxPeers
	if s.maxPeers <= 0 {
		s.maxPeers = DefaultMaxPeers
	}
	s.bySource = newLimiter[netip.Addr](orDefault(cfg.SourceRate, DefaultSourceRate), limiterEntries)
	s.byKey = newLimiter[key.Key](orDefault(cfg.KeyRate, DefaultKeyRate), limiterEntries)
	s.keys = newKeyCache(s.secret, sharedKeyCacheSize, orDefault(cfg.NewKeyRate, DefaultNewKeyRate))
	s.lookups = newLimiter[key.Key](orDefault(cfg.LookupRate, DefaultLookupRate), limiterEntries)
	s.maxMembers = cfg.MaxMembers
	if s.maxMembers <= 0 {
		s.maxMembers = DefaultMaxMembers
	}
	if len(cfg.Networks) > 0 {
		s.allowNetworks = make(map[cert.NetworkKey]bool, len(cfg.Networks))
		for _, n := range cfg.Networks {
			s.allowNetworks[n] = true
		}
	}
}

// maxSeen bounds the replay table: the keys registered now, and those
// registered within the last ReplayWindow.
func (s *Server) maxSeen() int { return 2 * s.maxPeers }

// allowSource takes a token from src's budget for an answer or an
// envelope to open, counting a refusal.
func (s *Server) allowSource(src netip.AddrPort, now time.Time) bool {
	if s.bySource.allow(sourceKey(src), now) {
		return true
	}
	s.Stats.DropRateLimited.Add(1)
	return false
}

// admit screens a control message before any work is spent on it: its
// size, then its source's rate.
func (s *Server) admit(b []byte, src netip.AddrPort, now time.Time) bool {
	if len(b) > MaxControlLen {
		s.Stats.DropOversize.Add(1)
		return false
	}
	return s.allowSource(src, now)
}

// screen decides whether an authenticated message is acted on, counting
// why not: it must be one a server takes; one from a key that is not
// registered must be a registration, for which there is room; and it must
// be fresh (not a replay) and within its key's rate. The key's rate is
// charged after the replay check, so that replays of a peer's messages
// cannot spend its budget. Callers hold s.mu.
func (s *Server) screen(sender key.Key, registered bool, body wire.Body, now time.Time) bool {
	switch body.(type) {
	case *wire.Register, *wire.Query, *wire.Deregister, *wire.Relayed, *wire.Lookup, *wire.Publish:
	default:
		s.Stats.DropMalformed.Add(1) // a peer-to-peer or server-to-peer message
		return false
	}
	if !registered {
		if _, ok := body.(*wire.Register); !ok {
			// A query or deregistration from a key that is not
			// registered does nothing and is not remembered.
			s.Stats.DropUnregistered.Add(1)
			return false
		}
		_, known := s.seen[sender]
		if len(s.peers) >= s.maxPeers || (!known && len(s.seen) >= s.maxSeen()) {
			s.Stats.DropTooMany.Add(1)
			return false
		}
	}
	if !s.fresh(sender, wire.TimeOf(body), now) {
		s.Stats.DropReplay.Add(1)
		return false
	}
	if !s.byKey.allow(sender, now) {
		s.Stats.DropRateLimited.Add(1)
		return false
	}
	return true
}
