package rendezvous

import (
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// The registry: who is registered where, their memberships, the
// introductions between them, and each key's last Time (the replay
// guard), all under one lock. It acts on opened control messages and
// answers with what is to be sent (outgoing), never writing under its
// lock; the parts it calls in — the limits, the
// documents, the TURN credentials, the clock — have locks of their own, or
// none, and call nothing back.

// An egress carries packets back to peers: a UDP socket, or one peer's
// TCP stream (which ignores the address).
type egress interface {
	WriteToUDPAddrPort(b []byte, dst netip.AddrPort) (int, error)
}

// source is where a packet came from: a peer's address, and the egress
// it came in on, since a UDP and a TCP peer may share an address and port.
type source struct {
	egress egress
	addr   netip.AddrPort
}

type lastSeen struct {
	time uint64
	at   time.Time
}

// peerRecord is what the registry holds of one registered peer.
type peerRecord struct {
	destination // where replies leave, and its shared key
	nat         byte
	candidates  []netip.AddrPort
	wants       map[key.Key]struct{}
	expires     time.Time
	// offered is when the TURN credentials last sent to the peer expire.
	offered time.Time
	member  *membership // nil: no network
}

// registryParts are the parts the registry calls in.
type registryParts struct {
	limits *limits
	docs   *documents
	turn   *turnCredentials
	clock  *lockedClock
	stats  *Stats
	log    *slog.Logger
	dirty  *atomic.Bool // registrations changed since the last Save
}

type registry struct {
	registryParts
	secret        wire.Secret // for the shared keys of registrations restored
	ttl           time.Duration
	relay         bool                     // acks say the server relays
	allowNetworks map[cert.NetworkKey]bool // nil: any

	mu         sync.RWMutex
	peers      map[key.Key]*peerRecord
	byEndpoint map[source]key.Key // for relaying: who sends from where
	seen       map[key.Key]lastSeen
	// The networks of the members registered now.
	networks      map[cert.NetworkKey]*network
	intros        introductions
	refusedLogged map[key.Key]cert.Reason // the last refusal logged per peer
	// evictChecks counts the members looked at to act on revocations,
	// for tests: it must not grow with the members of the network.
	evictChecks int
}

func newRegistry(cfg Config, secret wire.Secret, parts registryParts) *registry {
	r := &registry{
		registryParts: parts,
		secret:        secret,
		ttl:           cfg.TTL,
		relay:         cfg.Relay,
		peers:         make(map[key.Key]*peerRecord),
		byEndpoint:    make(map[source]key.Key),
		seen:          make(map[key.Key]lastSeen),
		networks:      make(map[cert.NetworkKey]*network),
		refusedLogged: make(map[key.Key]cert.Reason),
	}
	r.intros = introductions{turn: parts.turn, clock: parts.clock, stats: parts.stats, log: parts.log, met: make(map[key.Key]map[key.Key]struct{})}
	if r.ttl == 0 {
		r.ttl = DefaultTTL
	}
	if len(cfg.Networks) > 0 {
		r.allowNetworks = make(map[cert.NetworkKey]bool, len(cfg.Networks))
		for _, n := range cfg.Networks {
			r.allowNetworks[n] = true
		}
	}
	return r
}

// sharedKey returns the shared key of k's registration, if it has one.
func (r *registry) sharedKey(k key.Key) (wire.SharedKey, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if rec := r.peers[k]; rec != nil {
		return rec.shared, true
	}
	return wire.SharedKey{}, false
}

// act acts on an opened control message, if screen lets it through, and
// returns what is to be sent.
func (r *registry) act(m *message, now time.Time) (out outgoing) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.peers[m.from] // it may have come or gone since it was opened
	if !r.screen(m.from, rec != nil, m.body, now) {
		return out
	}
	switch b := m.body.(type) {
	case *wire.Register:
		r.register(m, b, now, &out)
	case *wire.Query:
		r.query(m.from, b.Peer, &out)
	case *wire.Lookup:
		r.lookup(m.from, b, now, &out)
	case *wire.Publish:
		r.publish(m.from, m.doc, m.certErr, now, &out)
	case *wire.Relayed:
		r.passRelayed(m.from, b, &out)
	case *wire.Deregister:
		if rec != nil {
			r.remove(m.from, rec)
			r.log.Info("peer deregistered", "peer", m.from, "endpoint", rec.endpoint)
		}
	default:
		r.stats.DropMalformed.Add(1) // a peer-to-peer or server-to-peer message
	}
	return out
}

// screen decides whether an authenticated message is acted on, counting
// why not: it must be one a server takes; one from a key that is not
// registered must be a registration, for which there is room; and it must
// be fresh (not a replay) and within its key's rate. The key's rate is
// charged after the replay check, so that replays of a peer's messages
// cannot spend its budget. Callers hold r.mu.
func (r *registry) screen(sender key.Key, registered bool, body wire.Body, now time.Time) bool {
	switch body.(type) {
	case *wire.Register, *wire.Query, *wire.Deregister, *wire.Relayed, *wire.Lookup, *wire.Publish:
	default:
		r.stats.DropMalformed.Add(1) // a peer-to-peer or server-to-peer message
		return false
	}
	if !registered {
		if _, ok := body.(*wire.Register); !ok {
			// A query or deregistration from a key that is not
			// registered does nothing and is not remembered.
			r.stats.DropUnregistered.Add(1)
			return false
		}
		_, known := r.seen[sender]
		if !r.limits.roomFor(len(r.peers), len(r.seen), known) {
			r.stats.DropTooMany.Add(1)
			return false
		}
	}
	if !r.fresh(sender, wire.TimeOf(body), now) {
		r.stats.DropReplay.Add(1)
		return false
	}
	return r.limits.allowKey(sender, now)
}

// fresh reports whether t is a Time the sender has not used before and that
// lies within the replay window, and records it. Callers hold r.mu.
func (r *registry) fresh(sender key.Key, t uint64, now time.Time) bool {
	window := uint64(ReplayWindow)
	n := uint64(now.UnixNano())
	if t+window < n || t > n+window {
		return false
	}
	if last, ok := r.seen[sender]; ok && t <= last.time {
		return false
	}
	r.seen[sender] = lastSeen{time: t, at: now}
	return true
}

// register takes a registration; m.member is its certificate as checkCert
// found it, or m.certErr why not (both nil: none). Callers hold r.mu.
func (r *registry) register(m *message, reg *wire.Register, now time.Time, out *outgoing) {
	sender, src, e := m.from, m.dest.endpoint, m.dest.egress
	member, certErr := m.member, m.certErr
	rec := r.peers[sender]
	changed := rec == nil || rec.endpoint != src || rec.egress != e || rec.nat != reg.NAT || !slices.Equal(rec.candidates, reg.Candidates)
	if rec != nil && (rec.member == nil) != (member == nil) {
		changed = true // joined or left its network
	}
	if changed {
		r.dirty.Store(true)
	}
	if rec == nil {
		rec = &peerRecord{destination: destination{shared: m.dest.shared}}
		r.peers[sender] = rec
		r.log.Info("peer registered", "peer", sender, "endpoint", src, "candidates", reg.Candidates)
	} else if changed {
		r.log.Info("peer moved", "peer", sender, "endpoint", src, "candidates", reg.Candidates)
	}
	if rec.endpoint != src || rec.egress != e {
		delete(r.byEndpoint, source{rec.egress, rec.endpoint})
		r.byEndpoint[source{e, src}] = sender
	}
	rec.egress = e
	rec.endpoint = src
	rec.nat = reg.NAT
	rec.candidates = reg.Candidates
	rec.wants = make(map[key.Key]struct{}, len(reg.Wants))
	for _, w := range reg.Wants {
		rec.wants[w] = struct{}{}
	}
	rec.expires = now.Add(r.ttl)
	if member != nil {
		if certErr = r.admitCert(member, now); certErr != nil {
			member = nil
		}
	}
	if member != nil {
		certErr = r.join(sender, rec, member, now, out)
	}
	if certErr != nil || reg.Cert == nil {
		r.leave(sender, rec)
	}
	r.stats.Registrations.Add(1)
	ack := &wire.RegisterAck{Time: r.clock.stamp(now), Observed: src}
	if r.relay {
		ack.Flags |= wire.AckRelay
	}
	if rec.member != nil && reg.Docs != nil {
		ack.Docs = r.documentsFor(sender, rec, *reg.Docs, out)
	}
	out.add(rec.destination, ack)
	if certErr != nil {
		r.refuse(sender, rec, certErr, now, out)
	}
	r.turn.offerDue(sender, rec, now, out)

	// A peer that is new or has moved is introduced at once to every peer
	// that waits for it: this is what brings a tunnel back within a second
	// of a peer's restart or network change.
	if changed {
		for w := range rec.wants {
			if other := r.peers[w]; other != nil {
				if _, ok := other.wants[sender]; ok {
					r.intros.introduce(sender, rec, w, other, out)
				}
			}
		}
		if rec.member != nil {
			for k := range r.intros.metBy(sender) {
				if other := r.peers[k]; other != nil && sameNetwork(rec, other) {
					r.intros.introduce(sender, rec, k, other, out)
				}
			}
		}
	}
}

// remove forgets a registration. Callers hold r.mu.
func (r *registry) remove(k key.Key, rec *peerRecord) {
	r.dirty.Store(true)
	r.leave(k, rec)
	delete(r.peers, k)
	if src := (source{rec.egress, rec.endpoint}); r.byEndpoint[src] == k {
		delete(r.byEndpoint, src)
	}
}

// expire forgets the registrations of peers that stopped refreshing, and
// the replay records past the replay window.
func (r *registry) expire(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, rec := range r.peers {
		if now.After(rec.expires) {
			r.remove(k, rec)
			r.log.Info("registration expired", "peer", k, "endpoint", rec.endpoint)
		}
	}
	for k, ls := range r.seen {
		if now.Sub(ls.at) > ReplayWindow {
			delete(r.seen, k)
		}
	}
}

// dropEgress forgets the peers registered over a TCP stream that closed:
// nothing can reach them through it any more.
func (r *registry) dropEgress(e egress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, rec := range r.peers {
		if rec.egress == e {
			r.remove(k, rec)
			r.log.Info("peer's TCP connection closed", "peer", k, "endpoint", rec.endpoint)
		}
	}
}

// count reports the number of live registrations.
func (r *registry) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.peers)
}
