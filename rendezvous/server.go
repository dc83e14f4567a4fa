// Package rendezvous is the public meeting point of punchtun peers: it
// answers STUN, keeps authenticated registrations, and introduces two peers
// to each other when, and only when, each lists the other in its config or
// both are members of one network.
//
// The protocol is in package wire. A peer proves it holds its WireGuard
// private key by sealing every message to the rendezvous's public key; the
// rendezvous never sees a private key, and answers nothing it cannot
// authenticate except STUN binding requests.
//
// The Server only wires its parts and dispatches packets to them. Each
// part owns its state: the registry the registrations, memberships and
// replay records, under one lock, and the introductions it makes; the
// relays ask the registry where frames go and send them outside its lock,
// from the udpServer and the tcpServer; the turnCredentials are computed
// from the config alone; the documents (a docStore and an outbox, each
// with its own lock) fan the networks' documents out from a goroutine of
// their own; the limits are token buckets with their own locks;
// persistence reads and writes the state file through the registry and
// the docStore. What the registry answers is sealed and written once its
// lock is let go.
package rendezvous

import (
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

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
	// Bounds, kept by limits; 0 means the default, a negative rate no limit.
	MaxPeers   int     // live registrations; DefaultMaxPeers
	SourceRate float64 // STUN and control packets/s per source address; DefaultSourceRate
	KeyRate    float64 // authenticated messages/s per key; DefaultKeyRate
	NewKeyRate float64 // shared-key computations/s for unknown keys; DefaultNewKeyRate
	// TURN, when it names servers, is handed to peers for relaying.
	TURN TURNConfig
	// Networks, when not empty, are the only networks whose members are
	// served; others register as peers without a network.
	Networks []cert.NetworkKey
	// MaxMembers bounds one network's members (DefaultMaxMembers);
	// LookupRate one member's lookups per second (DefaultLookupRate).
	MaxMembers int
	LookupRate float64
}

// Server is a rendezvous. Serve it on one or more UDP sockets.
type Server struct {
	pub   key.Key
	log   *slog.Logger
	clock *lockedClock

	limits *limits
	reg    *registry
	docs   *documents
	relays *relays
	udp    *udpServer
	tcp    *tcpServer
	state  *persistence

	newKeyJobs chan newKeyJob

	Stats Stats
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup // the goroutines Close waits for
}

// lockedClock is a wire.Clock for every part: the registry and the
// outbox take Times under no common lock.
type lockedClock struct {
	mu sync.Mutex
	c  wire.Clock
}

// Next is wire.Clock.Next.
func (c *lockedClock) Next(now uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c.Next(now)
}

// stamp is the Time of a message sent at now.
func (c *lockedClock) stamp(now time.Time) uint64 { return c.Next(uint64(now.UnixNano())) }

// NewServer returns a Server; its expiry loop runs until Close.
func NewServer(cfg Config) *Server {
	s := &Server{
		pub:        cfg.PrivateKey.Public(),
		log:        cfg.Logger,
		clock:      &lockedClock{},
		newKeyJobs: make(chan newKeyJob, newKeyQueue),
		done:       make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	secret, _ := wire.NewSecret(cfg.PrivateKey) // any 32 bytes are an X25519 private key
	s.state = &persistence{}
	s.limits = newLimits(cfg, secret, &s.Stats)
	s.docs = newDocuments(s.pub, s.clock, s.limits, &s.Stats, s.log, &s.state.dirty)
	turn := &turnCredentials{cfg: cfg.TURN, clock: s.clock, stats: &s.Stats}
	s.reg = newRegistry(cfg, secret, registryParts{
		limits: s.limits, docs: s.docs, turn: turn, clock: s.clock,
		stats: &s.Stats, log: s.log, dirty: &s.state.dirty,
	})
	s.state.registrations, s.state.docs = s.reg, s.docs.store
	s.relays = &relays{on: cfg.Relay, stats: &s.Stats, routes: s.reg}
	s.udp = &udpServer{handle: s.handle, relays: s.relays, log: s.log}
	s.tcp = &tcpServer{handle: s.handle, closed: s.reg.dropEgress, stats: &s.Stats}
	go s.expireLoop()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.docs.run(s.done, s.reg)
	}()
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
	return s.udp.serve(conn, other)
}

// ServeTCP accepts peers whose networks block UDP, until ln is closed.
// They speak the same datagrams as over UDP, framed by wire.Stream, and
// are relayed like any other peer; the relay is then their only path.
func (s *Server) ServeTCP(ln net.Listener) error {
	return s.tcp.serve(ln)
}

// Registered reports the number of live registrations.
func (s *Server) Registered() int { return s.reg.count() }

// Members reports the members registered now and the networks they form.
func (s *Server) Members() (members, networks int) { return s.reg.members() }

// expireLoop forgets, once a second, what has expired.
func (s *Server) expireLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.expire(now)
		}
	}
}

// expire forgets the registrations and replay records past their time,
// and the documents of networks without members past theirs.
func (s *Server) expire(now time.Time) {
	s.reg.expire(now)
	s.docs.prune(now)
}
