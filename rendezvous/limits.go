package rendezvous

import (
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// The limits: what one source, one key, one member and all unknown keys
// together may cost the rendezvous, and how many peers and members it
// holds. Each rate is a table of token buckets with its own lock (a
// limiter); the bounds are numbers set once.

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
	// core, done outside the registry's lock: the other core keeps serving
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

// limits are the bounds of a Config, or their defaults. A refusal by a
// rate is counted as DropRateLimited.
type limits struct {
	maxPeers   int
	maxMembers int
	bySource   *limiter[netip.Addr]
	byKey      *limiter[key.Key]
	lookups    *limiter[key.Key]
	keys       *keyCache // shared keys of unregistered senders
	stats      *Stats
}

func newLimits(cfg Config, secret wire.Secret, stats *Stats) *limits {
	orDefault := func(v, def float64) float64 {
		if v == 0 {
			return def
		}
		return v
	}
	l := &limits{
		maxPeers:   cfg.MaxPeers,
		maxMembers: cfg.MaxMembers,
		bySource:   newLimiter[netip.Addr](orDefault(cfg.SourceRate, DefaultSourceRate), limiterEntries),
		byKey:      newLimiter[key.Key](orDefault(cfg.KeyRate, DefaultKeyRate), limiterEntries),
		lookups:    newLimiter[key.Key](orDefault(cfg.LookupRate, DefaultLookupRate), limiterEntries),
		keys:       newKeyCache(secret, sharedKeyCacheSize, orDefault(cfg.NewKeyRate, DefaultNewKeyRate)),
		stats:      stats,
	}
	if l.maxPeers <= 0 {
		l.maxPeers = DefaultMaxPeers
	}
	if l.maxMembers <= 0 {
		l.maxMembers = DefaultMaxMembers
	}
	return l
}

// roomFor reports whether a new key may register beside peers
// registrations and seen replay records (known: one of them is its own).
// The replay table holds the keys registered now, and those registered
// within the last ReplayWindow.
func (l *limits) roomFor(peers, seen int, known bool) bool {
	return peers < l.maxPeers && (known || seen < 2*l.maxPeers)
}

// memberRoom reports whether a network of members may take one more.
func (l *limits) memberRoom(members int) bool { return members < l.maxMembers }

// spend takes a token from the budget of dst's address, for what is sent
// there, counting nothing.
func (l *limits) spend(dst netip.AddrPort, now time.Time) bool {
	return l.bySource.allow(sourceKey(dst), now)
}

// allowSource takes a token from src's budget for an answer or an
// envelope to open, counting a refusal.
func (l *limits) allowSource(src netip.AddrPort, now time.Time) bool {
	return l.counted(l.spend(src, now))
}

// admit screens a control message before any work is spent on it: its
// size, then its source's rate.
func (l *limits) admit(b []byte, src netip.AddrPort, now time.Time) bool {
	if len(b) > MaxControlLen {
		l.stats.DropOversize.Add(1)
		return false
	}
	return l.allowSource(src, now)
}

// allowKey takes a token from an authenticated sender's budget.
func (l *limits) allowKey(k key.Key, now time.Time) bool {
	return l.counted(l.byKey.allow(k, now))
}

// allowLookup takes a token from a member's budget of lookups.
func (l *limits) allowLookup(k key.Key, now time.Time) bool {
	return l.counted(l.lookups.allow(k, now))
}

func (l *limits) counted(allowed bool) bool {
	if !allowed {
		l.stats.DropRateLimited.Add(1)
	}
	return allowed
}
