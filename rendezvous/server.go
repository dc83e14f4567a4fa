// Package rendezvous is the public meeting point of punchtun peers: it
// answers STUN, keeps authenticated registrations, and introduces two peers
// to each other when, and only when, each lists the other in its config or
// both are members of one network (networks.go).
//
// The protocol is in package wire. A peer proves it holds its WireGuard
// private key by sealing every message to the rendezvous's public key; the
// rendezvous never sees a private key, and answers nothing it cannot
// authenticate except STUN binding requests.
package rendezvous

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

const (
	// RefreshInterval is how often peers refresh their registration
	// (wire.RefreshInterval).
	RefreshInterval = wire.RefreshInterval
	// DefaultTTL forgets a peer that missed three refreshes.
	DefaultTTL = 3 * RefreshInterval
	// ReplayWindow is how far a message's Time may be from the server's
	// clock, and how long the server remembers a key's last Time after its
	// registration is gone. Within it, a replay is caught by the per-key
	// last Time; outside it, by the window itself.
	ReplayWindow = 10 * time.Minute
)

// Config configures a Server.
type Config struct {
	PrivateKey key.Private
	TTL        time.Duration // 0 means DefaultTTL
	// Relay forwards WireGuard packets between two peers it would
	// introduce, for pairs that cannot reach each other directly.
	Relay  bool
	Logger *slog.Logger
	// Bounds (limit.go); 0 means the default, a negative rate no limit.
	MaxPeers   int     // live registrations; DefaultMaxPeers
	SourceRate float64 // STUN and control packets/s per source address; DefaultSourceRate
	KeyRate    float64 // authenticated messages/s per key; DefaultKeyRate
	NewKeyRate float64 // shared-key computations/s for unknown keys; DefaultNewKeyRate
	// TURN, when it names servers, is handed to peers for relaying
	// (turn.go).
	TURN TURNConfig
	// Networks, when not empty, are the only networks whose members are
	// served (networks.go); others register as peers without a network.
	Networks []cert.NetworkKey
	// MaxMembers bounds one network's members (DefaultMaxMembers);
	// LookupRate one member's lookups per second (DefaultLookupRate).
	MaxMembers int
	LookupRate float64
}

// Server is a rendezvous. Serve it on one or more UDP sockets.
type Server struct {
	pub    key.Key
	secret wire.Secret // the private key, set up for shared keys
	ttl    time.Duration
	relay  bool
	turn   TURNConfig
	log    *slog.Logger

	mu         sync.RWMutex
	peers      map[key.Key]*registration
	byEndpoint map[source]key.Key // for relaying: who sends from where
	seen       map[key.Key]lastSeen
	clock      lockedClock

	maxPeers int
	bySource *limiter[netip.Addr]
	byKey    *limiter[key.Key]
	keys     *keyCache // shared keys of unregistered senders

	// The networks of the members registered now (networks.go).
	networks map[cert.NetworkKey]*network
	// docs are the networks' documents (docstore.go, its own lock); out
	// sends them to members (outbox.go, its own lock and goroutine).
	docs          *docStore
	out           *outbox
	docLogged     time.Time                // when a document past its budget was last logged
	allowNetworks map[cert.NetworkKey]bool // nil: any
	maxMembers    int
	lookups       *limiter[key.Key]
	refusedLogged map[key.Key]cert.Reason // the last refusal logged per peer
	// evictChecks counts the members looked at to act on revocations,
	// for tests: it must not grow with the members of the network.
	evictChecks int

	newKeyJobs chan newKeyJob

	Stats Stats
	dirty atomic.Bool // registrations changed since the last Save (persist.go)
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup // the goroutines Close waits for
}

// Next is wire.Clock.Next.
func (c *lockedClock) Next(now uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.Next(now)
}

type registration struct {
	shared     wire.SharedKey
	link       link // where replies leave: the UDP socket the peer talks to, or its TCP stream
	endpoint   netip.AddrPort
	nat        byte
	candidates []netip.AddrPort
	wants      map[key.Key]struct{}
	expires    time.Time
	// offered is when the TURN credentials last sent to the peer expire.
	offered time.Time
	member  *membership // nil: no network
}

// A link carries packets back to peers: a UDP socket, or one peer's TCP
// stream (which ignores the address).
type link interface {
	WriteToUDPAddrPort(b []byte, dst netip.AddrPort) (int, error)
}

// source is where a packet came from: a peer's address, and the link it
// came in on, since a UDP and a TCP peer may share an address and port.
type source struct {
	link link
	addr netip.AddrPort
}

type lastSeen struct {
	time uint64
	at   time.Time
}

// NewServer returns a Server; its expiry loop runs until Close.
func NewServer(cfg Config) *Server {
	s := &Server{
		pub:           cfg.PrivateKey.Public(),
		ttl:           cfg.TTL,
		relay:         cfg.Relay,
		turn:          cfg.TURN,
		log:           cfg.Logger,
		peers:         make(map[key.Key]*registration),
		byEndpoint:    make(map[source]key.Key),
		seen:          make(map[key.Key]lastSeen),
		newKeyJobs:    make(chan newKeyJob, newKeyQueue),
		networks:      make(map[cert.NetworkKey]*network),
		docs:          newDocStore(),
		out:           newOutbox(),
		refusedLogged: make(map[key.Key]cert.Reason),
		done:          make(chan struct{}),
	}
	s.secret, _ = wire.NewSecret(cfg.PrivateKey) // any 32 bytes are an X25519 private key
	if s.ttl == 0 {
		s.ttl = DefaultTTL
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.initLimits(cfg)
	go s.expireLoop()
	s.wg.Add(1)
	go s.runOutbox()
	for range runtime.GOMAXPROCS(0) {
		go s.newKeyWorker()
	}
	return s
}

// PublicKey is the key peers pin as RendezvousKey.
func (s *Server) PublicKey() key.Key { return s.pub }

// Close stops the expiry loop and the outbox, and waits for the outbox.
// It does not close the sockets given to Serve.
func (s *Server) Close() {
	s.once.Do(func() { close(s.done) })
	s.wg.Wait()
}

// Serve reads and answers packets on conn until conn is closed. other is
// the server's alternate address (another IP, or another port), if it has
// one: STUN answers advertise it, so that a client can tell whether its NAT
// maps per destination. An other with an unspecified IP (0.0.0.0:3479)
// stands for the address each packet came to, on that port: a socket
// bound to 0.0.0.0 learns it from IP_PKTINFO (Linux; elsewhere nothing is
// advertised).
func (s *Server) Serve(conn *net.UDPConn, other netip.AddrPort) error {
	return s.serveBatched(conn, other) // batch_linux.go, batch_other.go
}

// serveEach is Serve one datagram at a time: where batched I/O is not
// available.
func (s *Server) serveEach(conn *net.UDPConn, other netip.AddrPort) error {
	if other.Addr().IsUnspecified() {
		other = netip.AddrPort{} // no PKTINFO read here
	}
	buf := make([]byte, 65536)
	for {
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.handle(conn, other, buf[:n], netip.AddrPortFrom(src.Addr().Unmap(), src.Port()))
	}
}

func (s *Server) handle(l link, other netip.AddrPort, b []byte, src netip.AddrPort) {
	switch {
	case wire.IsRelay(b):
		s.forward(l, b, src)
	case nat.IsSTUN(b):
		if !s.allowSource(src, time.Now()) {
			return
		}
		resp, err := nat.BindingResponse(b, src, other)
		if err != nil {
			s.Stats.DropMalformed.Add(1)
			return
		}
		s.Stats.STUN.Add(1)
		l.WriteToUDPAddrPort(resp, src)
	case wire.IsControl(b):
		s.handleControl(l, b, src)
	default:
		s.Stats.DropMalformed.Add(1)
	}
}

func (s *Server) handleControl(l link, b []byte, src netip.AddrPort) {
	h, err := wire.ParseHeader(b)
	if err != nil {
		s.Stats.DropMalformed.Add(1)
		return
	}
	if !s.admit(b, src, time.Now()) {
		return
	}
	// Find the shared key and open the message outside the write lock: a
	// new key costs a Curve25519 multiplication (34 µs on the 2-core lab
	// machine), which must not stall everyone else's messages.
	s.mu.RLock()
	reg := s.peers[h.Sender]
	s.mu.RUnlock()
	if reg != nil {
		s.apply(l, h, b, src, reg.shared)
		return
	}
	if shared, ok := s.keys.cached(h.Sender); ok {
		s.apply(l, h, b, src, shared)
		return
	}
	if !s.keys.reserve(time.Now()) {
		s.Stats.DropRateLimited.Add(1)
		return
	}
	if _, udp := l.(*net.UDPConn); !udp {
		// A TCP stream has a goroutine of its own: it can wait.
		s.applyNewKey(newKeyJob{l, h, b, src})
		return
	}
	// A UDP socket has one reader for all its peers: the multiplication
	// goes to a worker, one per core, and the reader goes on.
	select {
	case s.newKeyJobs <- newKeyJob{l, h, bytes.Clone(b), src}:
	default:
		s.Stats.DropRateLimited.Add(1) // the workers are that far behind
	}
}

// newKeyJob is a control message over UDP from a key without a shared key
// yet, waiting for a worker.
type newKeyJob struct {
	l   link
	h   wire.Header
	b   []byte
	src netip.AddrPort
}

// newKeyQueue bounds the messages waiting for a worker: under 9 MiB
// (MaxControlLen each), and 20 ms of work on two cores.
const newKeyQueue = 1024

func (s *Server) newKeyWorker() {
	for {
		select {
		case <-s.done:
			return
		case j := <-s.newKeyJobs:
			s.applyNewKey(j)
		}
	}
}

func (s *Server) applyNewKey(j newKeyJob) {
	shared, err := s.keys.compute(j.h.Sender)
	if err != nil {
		s.Stats.DropAuth.Add(1) // a low-order key: anyone could seal for it
		return
	}
	s.apply(j.l, j.h, j.b, j.src, shared)
}

// apply opens a control message with its sender's shared key and acts on it.
func (s *Server) apply(l link, h wire.Header, b []byte, src netip.AddrPort, shared wire.SharedKey) {
	plain, err := wire.Open(b, &shared)
	if err != nil {
		s.Stats.DropAuth.Add(1)
		return
	}
	body, err := wire.Parse(h.Type, plain)
	if err != nil {
		s.Stats.DropMalformed.Add(1)
		return
	}
	var (
		member  *cert.Cert
		certErr error
		doc     *cert.Document
	)
	switch m := body.(type) {
	case *wire.Register:
		if m.Cert != nil {
			member, certErr = s.checkCert(h.Sender, cert.NetworkKey(m.Network), m.Cert, time.Now())
		}
	case *wire.Publish:
		// Outside the lock: an Ed25519 verify, unless it is a document
		// held already (members hand back what they take).
		if doc = s.docs.known(m.Doc); doc == nil {
			doc, certErr = cert.ParseDocument(m.Doc)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	reg := s.peers[h.Sender] // it may have come or gone meanwhile
	now := time.Now()
	if !s.screen(h.Sender, reg != nil, body, now) {
		return
	}
	switch m := body.(type) {
	case *wire.Register:
		s.register(l, h.Sender, shared, src, m, now, member, certErr)
	case *wire.Query:
		s.query(h.Sender, m.Peer)
	case *wire.Lookup:
		s.lookup(h.Sender, m, now)
	case *wire.Publish:
		s.publish(h.Sender, doc, certErr, now)
	case *wire.Relayed:
		s.passRelayed(h.Sender, m)
	case *wire.Deregister:
		if reg != nil {
			s.remove(h.Sender, reg)
			s.log.Info("peer deregistered", "peer", h.Sender, "endpoint", reg.endpoint)
		}
	default:
		s.Stats.DropMalformed.Add(1) // a peer-to-peer or server-to-peer message
	}
}

// fresh reports whether t is a Time the sender has not used before and that
// lies within the replay window, and records it. Callers hold s.mu.
func (s *Server) fresh(sender key.Key, t uint64, now time.Time) bool {
	window := uint64(ReplayWindow)
	n := uint64(now.UnixNano())
	if t+window < n || t > n+window {
		return false
	}
	if last, ok := s.seen[sender]; ok && t <= last.time {
		return false
	}
	s.seen[sender] = lastSeen{time: t, at: now}
	return true
}

// register takes a registration; member is its certificate as checkCert
// found it, or certErr why not (both nil: none).
func (s *Server) register(l link, sender key.Key, shared wire.SharedKey, src netip.AddrPort, m *wire.Register, now time.Time, member *cert.Cert, certErr error) {
	reg := s.peers[sender]
	changed := reg == nil || reg.endpoint != src || reg.link != l || reg.nat != m.NAT || !slices.Equal(reg.candidates, m.Candidates)
	if reg != nil && (reg.member == nil) != (member == nil) {
		changed = true // joined or left its network
	}
	if changed {
		s.dirty.Store(true)
	}
	if reg == nil {
		reg = &registration{shared: shared}
		s.peers[sender] = reg
		s.log.Info("peer registered", "peer", sender, "endpoint", src, "candidates", m.Candidates)
	} else if changed {
		s.log.Info("peer moved", "peer", sender, "endpoint", src, "candidates", m.Candidates)
	}
	if reg.endpoint != src || reg.link != l {
		delete(s.byEndpoint, source{reg.link, reg.endpoint})
		s.byEndpoint[source{l, src}] = sender
	}
	reg.link = l
	reg.endpoint = src
	reg.nat = m.NAT
	reg.candidates = m.Candidates
	reg.wants = make(map[key.Key]struct{}, len(m.Wants))
	for _, w := range m.Wants {
		reg.wants[w] = struct{}{}
	}
	reg.expires = now.Add(s.ttl)
	if member != nil {
		if certErr = s.admitCert(member, now); certErr != nil {
			member = nil
		}
	}
	if member != nil {
		certErr = s.join(sender, reg, member, now)
	}
	if certErr != nil || m.Cert == nil {
		s.leave(sender, reg)
	}
	s.Stats.Registrations.Add(1)
	ack := &wire.RegisterAck{Time: s.clock.Next(uint64(now.UnixNano())), Observed: src}
	if s.relay {
		ack.Flags |= wire.AckRelay
	}
	if reg.member != nil && m.Docs != nil {
		// What it lacks goes after the ack: the outbox reads the
		// registrations only once s.mu is let go.
		ack.Docs = s.documentsFor(sender, reg, *m.Docs, now)
	}
	s.send(reg, ack)
	if certErr != nil {
		s.refuse(sender, reg, certErr, now)
	}
	if s.turn.enabled() && reg.offered.Sub(now) < s.turn.ttl()/2 {
		s.offerTURN(sender, reg, now)
	}

	// A peer that is new or has moved is introduced at once to every peer
	// that waits for it: this is what brings a tunnel back within a second
	// of a peer's restart or network change.
	if changed {
		for w := range reg.wants {
			if other := s.peers[w]; other != nil {
				if _, ok := other.wants[sender]; ok {
					s.introduce(sender, reg, w, other)
				}
			}
		}
		if reg.member != nil {
			for k := range reg.member.introduced {
				if other := s.peers[k]; other != nil && sameNetwork(reg, other) {
					s.introduce(sender, reg, k, other)
				}
			}
		}
	}
}

// Registered reports the number of live registrations.
func (s *Server) Registered() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.peers)
}
