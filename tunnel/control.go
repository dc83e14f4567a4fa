package tunnel

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/tunnel/key"
)

// control is the peer's control plane: it registers with the rendezvous
// servers, learns the public address and the NAT's behaviour with STUN,
// punches holes to the peers the rendezvous introduces, and keeps each
// peer's PeerEndpoint on the best route: a confirmed direct path, else the
// relay. It runs one goroutine; everything it owns is guarded by mu so that
// status can read it.
type control struct {
	log       *slog.Logger
	priv, pub key.Key
	bind      *Bind
	iface     string
	own       []netip.Prefix // the tunnel's addresses: never candidates
	wg        wireGuard

	in      chan inbound
	done    chan struct{}
	stopped chan struct{}
	// netChanged signals a change of the host's addresses or routes
	// (watchNetwork).
	netChanged chan struct{}
	// pathChecks names destinations whose path MTU to look up
	// (pathmtu.go): a route changed, or a batch to it was too big.
	pathChecks chan netip.AddrPort
	ifaceMTU   int
	// relayedInitiations names peers whose handshake came through a
	// relay while our route to them is direct (Bind.OnRelayedInitiation).
	relayedInitiations chan key.Key
	Dropped            atomic.Uint64 // control packets dropped: unauthenticated, replayed, or queue full
	// workers are the goroutines the control plane starts (spawn): the
	// control goroutine, the network watch, resolvers, TCP dialers and
	// readers, birthday sockets' readers. stop ends and waits for them
	// all; ctx, cancelled by stop, bounds what they wait for.
	workers sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc

	mu    sync.Mutex
	clock wire.Clock
	// udpSince is when we started waiting for a first UDP answer: at
	// start, and after each network change.
	udpSince time.Time
	servers  []*server
	peers    map[key.Key]*peer
	wants    []key.Key
	mapping  nat.Mapping // our NAT, as STUN tells it
	// What the last run remembered (state.go), and where to keep it.
	saved     savedState
	statePath string
	// udpHeard: some rendezvous answered over UDP since udpSince.
	udpHeard bool
	// reregistered is when a lost path or a silent relay last made us
	// register again.
	reregistered time.Time
	// netSettle: the host's network changed; act once it has been still
	// for netSettleTime (zero: nothing pending).
	netSettle time.Time
	stun      map[nat.STUNTxID]stunProbe
}

type inbound struct {
	pkt []byte
	src netip.AddrPort
	at  time.Time
	tcp bool         // came over a rendezvous's TCP stream
	via *net.UDPConn // came in on this birthday socket, not the shared one
}

// server is one rendezvous as seen from a peer.
type server struct {
	hostport string
	pub      key.Key
	shared   wire.SharedKey

	addr       netip.AddrPort // resolved; invalid until then
	resolving  bool
	registered bool
	pending    bool           // a registration awaits its ack
	relay      bool           // it relays for us
	observed   netip.AddrPort // our endpoint as the rendezvous sees it
	mapped     netip.AddrPort // our endpoint as its STUN answer says
	other      netip.AddrPort // its alternate address (STUN OTHER-ADDRESS)
	otherSeen  netip.AddrPort // our endpoint as seen from there
	lastTime   uint64         // replay guard for its messages
	sentNAT    nat.Mapping    // what the registration in flight said of our NAT
	next       time.Time
	backoff    time.Duration

	// TCP fallback, while UDP is blocked (tcp.go).
	stream     *wire.Stream
	dialing    bool
	nextDial   time.Time
	tcpBackoff time.Duration
}

// stunProbe is a STUN request in flight.
type stunProbe struct {
	server *server
	dst    netip.AddrPort
}

// peer is a peer whose address the control plane finds.
type peer struct {
	name   string
	key    key.Key
	shared wire.SharedKey
	ep     *PeerEndpoint
	punch  *nat.Punch

	nat          nat.Mapping // the peer's NAT, as its intro says
	relayVia     *server     // the rendezvous that introduced it, which relays between us
	pathMTU      int         // of the route in use, as the kernel learned it (pathmtu.go); 0 if unknown
	nextMTUCheck time.Time
	routeMTU     int // the MTU its AllowedIPs are routed with; 0: the interface's
	// observed is the peer's public endpoint as each rendezvous last
	// introduced it (one per rendezvous: a hard NAT maps each apart).
	observed map[*server]netip.AddrPort
	path     string // direct, lan, relay or connecting: the route in use
	history  []PathChange

	nextQuery  time.Time
	backoff    time.Duration
	fromMemory bool // the current round probes a remembered endpoint
	// handshakeCheck: when to see whether WireGuard has a session since
	// the route last changed (see wireGuard.handshakeIfNone).
	handshakeCheck time.Time

	birthday        *birthday // hard side of a birthday round (birthday.go)
	nextBirthday    time.Time
	birthdayBackoff time.Duration
}

// PathChange is one entry of a peer's path history.
type PathChange struct {
	Time time.Time `json:"time"`
	From string    `json:"from"`
	To   string    `json:"to"`
	Why  string    `json:"why"`
}

const (
	tickInterval = 50 * time.Millisecond
	minBackoff   = time.Second
	inboundQueue = 256
	// maxPunchBackoff spaces the background retries of direct paths while
	// a peer is relayed; hardBackoff when both NATs map per destination,
	// where a direct path is not to be expected.
	maxPunchBackoff = time.Minute
	hardBackoff     = 5 * time.Minute
	// maxRegisterBackoff spaces registrations to a rendezvous that does
	// not answer: one packet every 5 s costs little, and a rendezvous that
	// comes back has its peers again within 5 s.
	maxRegisterBackoff = 5 * time.Second
	// udpGiveUp is how long without any answer from any rendezvous before
	// UDP is taken for blocked.
	udpGiveUp = 5 * time.Second
	// historyKeep is how far back the path history goes.
	historyKeep = time.Hour
)

// ServerConfig names one rendezvous.
type ServerConfig struct {
	HostPort string
	Key      key.Key
}

// PeerConfig names one peer the control plane finds.
type PeerConfig struct {
	Name string
	Key  key.Key
}

func newControl(log *slog.Logger, priv key.Key, iface string, own []netip.Prefix, servers []ServerConfig, peers []PeerConfig) *control {
	c := &control{
		log:                log,
		priv:               priv,
		pub:                priv.Public(),
		iface:              iface,
		own:                own,
		in:                 make(chan inbound, inboundQueue),
		pathChecks:         make(chan netip.AddrPort, 16),
		relayedInitiations: make(chan key.Key, 16),
		done:               make(chan struct{}),
		stopped:            make(chan struct{}),
		peers:              make(map[key.Key]*peer),
		stun:               make(map[nat.STUNTxID]stunProbe),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	for _, s := range servers {
		c.servers = append(c.servers, &server{hostport: s.HostPort, pub: s.Key, shared: wire.NewSharedKey(priv, s.Key), backoff: minBackoff, tcpBackoff: minBackoff})
	}
	for _, pc := range peers {
		p := &peer{name: pc.Name, key: pc.Key, shared: wire.NewSharedKey(priv, pc.Key), backoff: minBackoff,
			birthdayBackoff: minBirthdayBackoff, path: nat.PathNone.String(), observed: map[*server]netip.AddrPort{}}
		p.punch = nat.NewPunch(leads(c.pub, pc.Key), func(dst netip.AddrPort, m wire.Body) {
			if conn := p.socketTo(dst); conn != nil {
				c.sendVia(conn, p, dst, m)
				return
			}
			c.sendSealed(dst, &p.shared, m)
		})
		c.peers[pc.Key] = p
		c.wants = append(c.wants, pc.Key)
	}
	return c
}

// leads reports whether we, with public key ours, lead the pair with
// theirs: the smaller key sends the path's heartbeats (nat.Punch) and wins
// crossed handshakes (handshake.go).
func leads(ours, theirs key.Key) bool { return bytes.Compare(ours[:], theirs[:]) < 0 }

// deliver is the Bind's control callback: it runs on WireGuard's receive
// goroutines, so it only copies and queues.
func (c *control) deliver(pkt []byte, src netip.AddrPort) { c.queue(pkt, src, false) }

func (c *control) queue(pkt []byte, src netip.AddrPort, tcp bool) {
	select {
	case c.in <- inbound{pkt: bytes.Clone(pkt), src: src, at: time.Now(), tcp: tcp}:
	default:
		c.Dropped.Add(1)
	}
}

// wireGuard is what the control plane asks of the WireGuard device.
type wireGuard interface {
	// repoint makes WireGuard send to the peer's PeerEndpoint again, in
	// case its roaming followed a packet elsewhere.
	repoint(peer key.Key)
	// handshakeIfNone starts a handshake with the peer unless WireGuard
	// has had one: a process that restarted has no session while the
	// peer holds the old one, whose packets it cannot read, and nobody
	// would start a new one until the peer's 15 s timeout.
	handshakeIfNone(peer key.Key)
	// setPeerMTU routes the peer's AllowedIPs with an MTU of mtu (0: the
	// interface's).
	setPeerMTU(peer key.Key, mtu int) error
}

func (c *control) start(bind *Bind, wg wireGuard) {
	c.bind, c.wg = bind, wg
	c.udpSince = time.Now()
	for _, p := range c.peers {
		p.ep = bind.PeerEndpoint(p.key)
	}
	bind.OnMsgSize(c.queuePathCheck)
	bind.OnRelayedInitiation(func(k key.Key) {
		select {
		case c.relayedInitiations <- k:
		default:
		}
	})
	c.netChanged = make(chan struct{}, 1)
	c.spawn(func() { watchNetwork(c.log, c.iface, c.done, c.netChanged) })
	c.spawn(c.run)
}

// spawn runs f on a goroutine that stop waits for.
func (c *control) spawn(f func()) {
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		f()
	}()
}

func (c *control) run() {
	defer close(c.stopped)
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	c.tick(time.Now())
	for {
		select {
		case <-c.done:
			return
		case m := <-c.in:
			c.handle(m)
		case dst := <-c.pathChecks:
			c.checkPathMTU(dst)
		case k := <-c.relayedInitiations:
			c.peerHasNoDirectPath(k, time.Now())
		case <-c.netChanged:
			c.mu.Lock()
			c.netSettle = time.Now().Add(netSettleTime)
			c.mu.Unlock()
		case now := <-t.C:
			c.tick(now)
		}
	}
}

// stop deregisters from every rendezvous and ends the control goroutine.
func (c *control) stop() {
	close(c.done)
	c.cancel()
	<-c.stopped
	c.mu.Lock()
	for _, s := range c.servers {
		if s.registered {
			c.sendServer(s, &wire.Deregister{Time: c.now()})
		}
		if s.stream != nil {
			s.stream.Close()
		}
	}
	for _, p := range c.peers {
		c.closeBirthday(p, true)
	}
	c.mu.Unlock()
	c.workers.Wait()
}

// sendServer sends m to s: over its TCP stream if there is one, else over
// the shared socket.
func (c *control) sendServer(s *server, m wire.Body) {
	if s.stream == nil {
		c.sendSealed(s.addr, &s.shared, m)
		return
	}
	b := wire.Seal(make([]byte, 0, wire.Overhead+64), m.Type(), c.pub, &s.shared, m.Append(nil))
	if err := s.stream.Write(b); err != nil {
		c.log.Debug("send over TCP failed", "rendezvous", s.hostport, "type", m.Type(), "err", err)
	}
}

// udpBlocked reports whether UDP was taken for blocked on this network.
func (c *control) udpBlocked() bool { return c.mapping == nat.MappingBlocked }

func (c *control) now() uint64 { return c.clock.Next(uint64(time.Now().UnixNano())) }

func (c *control) sendSealed(dst netip.AddrPort, shared *wire.SharedKey, m wire.Body) {
	if !dst.IsValid() {
		return
	}
	b := wire.Seal(make([]byte, 0, wire.Overhead+64), m.Type(), c.pub, shared, m.Append(nil))
	if err := c.bind.SendTo(b, dst); err != nil {
		c.log.Debug("send failed", "to", dst, "type", m.Type(), "err", err)
	}
}

func (c *control) tick(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Before the servers' turn: the registrations it calls for leave in
	// this tick.
	if !c.netSettle.IsZero() && !now.Before(c.netSettle) {
		c.netSettle = time.Time{}
		c.networkChanged(now)
	}
	for _, s := range c.servers {
		c.tickServer(s, now)
	}
	c.checkBlocked(now)
	for _, p := range c.peers {
		c.tickBirthday(p, now)
		c.checkSilence(p, now)
		c.tickPathMTU(p, now)
		if !p.handshakeCheck.IsZero() && !now.Before(p.handshakeCheck) {
			p.handshakeCheck = time.Time{}
			c.wg.handshakeIfNone(p.key)
		}
		if p.punch.Tick(now) == nat.EventLost {
			c.log.Warn("direct path lost", "peer", p.label(), "endpoint", p.ep.punchedAddr())
			c.closeBirthday(p, true)
			c.reregister(now)
			p.nextQuery, p.backoff = now, minBackoff
			c.updateRoute(p, now, "no answer on the direct path")
		}
		// A round probing a remembered endpoint does not hold up asking a
		// rendezvous that has just come up.
		if !p.punch.Path().Addr.IsValid() && (!p.punch.Punching(now) || p.fromMemory) && !now.Before(p.nextQuery) {
			c.query(p, now)
		}
	}
}

func (c *control) tickServer(s *server, now time.Time) {
	if !s.addr.IsValid() {
		if !s.resolving {
			s.resolving = true
			c.spawn(func() { c.resolve(s) })
		}
		return
	}
	c.maybeDialTCP(s, now)
	if now.Before(s.next) {
		return
	}
	if c.udpBlocked() && s.stream == nil {
		// Registering over UDP is pointless; probe whether UDP is back.
		c.sendSTUN(s, s.addr)
		s.next = now.Add(wire.RefreshInterval)
		return
	}
	if s.pending {
		// The last registration went unanswered.
		if s.registered {
			c.log.Warn("rendezvous stopped answering", "rendezvous", s.hostport)
			s.registered = false
			c.serverChanged(s, now, "rendezvous stopped answering")
		}
	}
	if !s.registered || s.stream != nil {
		// Learn our public address from the same socket WireGuard uses;
		// the rendezvous is a STUN server too. Over TCP, this asks whether
		// UDP works again.
		c.sendSTUN(s, s.addr)
	}
	reg := &wire.Register{
		Time:       c.now(),
		NAT:        byte(c.mapping),
		Candidates: nat.LocalCandidates(c.bind.Port(), c.iface, c.own),
		Wants:      c.wants,
	}
	c.sendServer(s, reg)
	s.pending, s.sentNAT = true, c.mapping
	if s.registered {
		s.next = now.Add(minBackoff) // time for the refresh's ack
		return
	}
	s.next = now.Add(s.backoff)
	s.backoff = min(2*s.backoff, maxRegisterBackoff)
}

func (c *control) sendSTUN(s *server, dst netip.AddrPort) {
	tx, req := nat.NewBindingRequest()
	c.stun[tx] = stunProbe{server: s, dst: dst}
	c.bind.SendTo(req, dst)
}

// checkBlocked takes UDP for blocked when no rendezvous has answered
// anything for a while.
func (c *control) checkBlocked(now time.Time) {
	if c.mapping != nat.MappingUnknown || c.udpHeard || len(c.servers) == 0 || now.Sub(c.udpSince) < udpGiveUp {
		return
	}
	c.setMapping(nat.MappingBlocked, now)
}

func (c *control) setMapping(m nat.Mapping, now time.Time) {
	if m == c.mapping {
		return
	}
	c.mapping = m
	c.log.Info("NAT discovered", "mapping", m)
	// Tell the rendezvous now, so that peers learn it in their intros; a
	// registration in flight is followed up when its ack comes.
	for _, s := range c.servers {
		if s.addr.IsValid() && !s.pending {
			s.next = now
		}
	}
}

// resolve looks the rendezvous up off the control goroutine, retrying while
// the name does not resolve (the network may not be up yet).
func (c *control) resolve(s *server) {
	for {
		addr, err := nat.Resolve(c.ctx, s.hostport)
		if err == nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			s.addr, s.resolving = addr, false
			// Take relayed packets from every rendezvous from now on: the
			// first may overtake the registration's ack.
			var relays []netip.AddrPort
			for _, srv := range c.servers {
				if srv.addr.IsValid() {
					relays = append(relays, srv.addr)
				}
			}
			c.bind.SetRelays(relays)
			return
		}
		c.log.Warn("cannot resolve rendezvous", "rendezvous", s.hostport, "err", err)
		select {
		case <-c.done:
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// query asks every registered rendezvous for an introduction to p, backing
// off while no direct path comes of it.
func (c *control) query(p *peer, now time.Time) {
	asked := false
	for _, s := range c.servers {
		if s.registered {
			c.sendServer(s, &wire.Query{Time: c.now(), Peer: p.key})
			asked = true
		}
	}
	if !asked {
		// No rendezvous to ask: try where the peer was last seen.
		ep, ok := c.saved.endpoint(p.key, now)
		if !ok {
			return
		}
		c.log.Info("no rendezvous: probing the peer's last known endpoint", "peer", p.label(), "endpoint", ep)
		p.punch.Start(now, []netip.AddrPort{ep}, nat.ShortPunchDuration)
		p.punch.Tick(now)
	}
	p.fromMemory = !asked
	limit := maxPunchBackoff
	if c.mapping == nat.MappingHard && p.nat == nat.MappingHard {
		limit = hardBackoff
	}
	p.nextQuery = now.Add(p.backoff)
	p.backoff = min(2*p.backoff, limit)
}

func (c *control) handle(m inbound) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if nat.IsSTUN(m.pkt) {
		c.handleSTUN(m)
		return
	}
	if wire.IsRelay(m.pkt) {
		c.handleRelayedProbe(m) // punchtun ping through the relay (ping.go)
		return
	}
	h, err := wire.ParseHeader(m.pkt)
	if err != nil {
		c.Dropped.Add(1)
		return
	}
	for _, s := range c.servers {
		if s.pub == h.Sender {
			c.handleServer(s, h, m)
			return
		}
	}
	if p := c.peers[h.Sender]; p != nil {
		c.handlePeer(p, h, m)
		return
	}
	// Our own probe that came back to us from a LAN candidate with our own
	// address, or a stranger: nothing to answer.
	c.Dropped.Add(1)
}

func (c *control) handleSTUN(m inbound) {
	res, err := nat.ParseBindingResponse(m.pkt)
	probe, ok := c.stun[res.TxID]
	if err != nil || !ok || probe.dst != m.src {
		c.Dropped.Add(1)
		return
	}
	delete(c.stun, res.TxID)
	c.udpHeard = true
	if c.udpBlocked() {
		c.udpBack(m.at)
	}
	s := probe.server
	if probe.dst == s.addr {
		if s.mapped != res.Mapped {
			c.log.Info("public address learned by STUN", "rendezvous", s.hostport, "public", res.Mapped)
		}
		s.mapped = res.Mapped
		// Ask the server's other address too: whether it sees the same
		// endpoint tells whether our NAT maps per destination.
		if res.Other.IsValid() && res.Other != s.other {
			s.other = res.Other
			c.sendSTUN(s, s.other)
		}
	} else {
		s.otherSeen = res.Mapped
	}
	if mp := nat.ClassifyMapping(nat.LocalAddrs(), s.mapped, s.otherSeen); mp != nat.MappingUnknown {
		c.setMapping(mp, m.at)
	}
}

func (c *control) handleServer(s *server, h wire.Header, m inbound) {
	body, ok := c.open(m.pkt, h, &s.shared)
	if !ok {
		return
	}
	if !m.tcp {
		c.udpHeard = true
	}
	var t uint64
	switch b := body.(type) {
	case *wire.RegisterAck:
		t = b.Time
	case *wire.Intro:
		t = b.Time
	default:
		c.Dropped.Add(1)
		return
	}
	if t <= s.lastTime {
		c.Dropped.Add(1) // replayed
		return
	}
	s.lastTime = t
	switch b := body.(type) {
	case *wire.RegisterAck:
		c.registered(s, b, m.at)
	case *wire.Intro:
		p := c.peers[b.Peer]
		if p == nil {
			c.Dropped.Add(1)
			return
		}
		p.nat = nat.Mapping(b.NAT)
		if s.relay {
			p.relayVia = s
		}
		if last, ok := p.observed[s]; ok && last != b.Observed {
			// The peer is back from a new public endpoint: it restarted
			// (behind a hard NAT, always on a new port), moved, or its NAT
			// forgot it. Our direct path leads to the old one: leave it
			// now, not after SuspectTimeout, and punch as for a new peer.
			c.log.Info("peer has a new public endpoint: punching anew", "peer", p.label(), "was", last, "now", b.Observed)
			if p.punch.Path().Addr.IsValid() {
				p.punch.Drop()
				c.closeBirthday(p, true)
			}
			p.nextBirthday, p.birthdayBackoff = time.Time{}, minBirthdayBackoff
		}
		p.observed[s] = b.Observed
		// The peer asks for an intro when it has no path: if ours still
		// looks fine, it may be dead one way (it hears nothing from us).
		p.punch.Suspect(m.at)
		if p.punch.StartIfNew(m.at, append([]netip.AddrPort{b.Observed}, b.Candidates...), c.punchDuration(p)) {
			c.log.Info("punching", "peer", p.label(), "peer_nat", p.nat, "candidates", p.punch.Candidates())
		} else {
			c.log.Debug("introduced again with the candidates that just failed", "peer", p.label(), "retry_at", p.punch.RetryAt())
		}
		c.maybeBirthday(p, b.Observed, m.at)
		p.punch.Tick(m.at) // probe now, not at the next tick
		// Relay while punching, so the first packet does not wait.
		c.updateRoute(p, m.at, "introduced by the rendezvous")
	}
}

func (c *control) registered(s *server, ack *wire.RegisterAck, now time.Time) {
	wasRegistered, moved := s.registered, s.observed != ack.Observed
	s.registered, s.pending, s.observed = true, false, ack.Observed
	s.relay = ack.Flags&wire.AckRelay != 0
	s.backoff = minBackoff
	s.next = now.Add(wire.RefreshInterval)
	if s.sentNAT != c.mapping {
		s.next = now // the NAT was discovered after the registration left
	}
	if wasRegistered && !moved {
		return
	}
	c.log.Info("registered with rendezvous", "rendezvous", s.hostport, "public", ack.Observed, "relay", s.relay)
	c.serverChanged(s, now, "registered with the rendezvous")
	// Ask at once for every peer we have no direct path to.
	for _, p := range c.peers {
		if !p.punch.Path().Addr.IsValid() {
			p.nextQuery, p.backoff = time.Time{}, minBackoff
		}
	}
}

// serverChanged follows a rendezvous's registration coming or going: the
// routes through it.
func (c *control) serverChanged(s *server, now time.Time, why string) {
	for _, p := range c.peers {
		if p.relayVia == s {
			c.updateRoute(p, now, why)
		}
	}
}

func (c *control) handlePeer(p *peer, h wire.Header, m inbound) {
	body, ok := c.open(m.pkt, h, &p.shared)
	if !ok {
		return
	}
	// The peer proved itself from m.src: its WireGuard packets from there
	// belong to its PeerEndpoint.
	c.bind.Learn(p.ep, m.src)
	if m.via != nil {
		c.birthdayWon(p, m.via, m.src, m.at)
		if p.socketTo(m.src) != m.via {
			c.Dropped.Add(1) // a losing socket's late packet
			return
		}
	}
	switch b := body.(type) {
	case *wire.Ping:
		if path := p.punch.Path().Addr; path.IsValid() && m.src != path && nat.KindOf(m.src) == nat.KindOf(path) {
			// The peer probes from somewhere new: it moved, or its NAT
			// remapped it. Our path to its old address is likely dead.
			p.punch.Suspect(m.at)
		}
		p.punch.OnPing(m.at, m.src, b)
		if m.via != nil && p.punch.Path().Addr != m.src {
			// Confirm the winning socket from this side too.
			p.punch.Probe(m.at, m.src)
		}
	case *wire.Pong:
		if c.probeAnswered(p, m, b) {
			return // answers punchtun ping (ping.go)
		}
		if p.punch.OnPong(m.at, m.src, b) == nat.EventChosen {
			path := p.punch.Path()
			c.log.Info("direct path confirmed", "peer", p.label(), "path", path.Kind, "endpoint", path.Addr,
				"took", path.Took.Round(time.Millisecond), "rtt", path.RTT, "candidates", len(p.punch.Candidates()))
			p.backoff = minBackoff
			c.remember(p, path.Addr, m.at)
			if p.socketTo(path.Addr) == nil {
				c.closeBirthday(p, true) // the shared socket got through
			}
			c.updateRoute(p, m.at, "direct path confirmed by probes")
		}
	default:
		c.Dropped.Add(1)
	}
}

func (c *control) open(pkt []byte, h wire.Header, shared *wire.SharedKey) (wire.Body, bool) {
	plain, err := wire.Open(pkt, shared)
	if err != nil {
		c.Dropped.Add(1)
		return nil, false
	}
	body, err := wire.Parse(h.Type, plain)
	if err != nil {
		c.Dropped.Add(1)
		return nil, false
	}
	return body, true
}

// updateRoute puts p on the best route there is: a confirmed direct path,
// else the relay of the rendezvous that introduced it, else none. A change
// is logged once, with why, and kept in the history.
func (c *control) updateRoute(p *peer, now time.Time, why string) {
	var r Route
	if path := p.punch.Path(); path.Addr.IsValid() {
		r = Route{Dst: path.Addr, Socket: p.socketTo(path.Addr)}
	} else if s := p.relayVia; s != nil && s.registered && s.relay {
		r = Route{Dst: s.addr, Relay: true, Stream: s.stream}
	}
	if p.ep.Route() == r {
		return
	}
	c.bind.SetRoute(p.ep, r)
	if r.Dst.IsValid() {
		c.queuePathCheck(r.Dst)
	}
	if r.Dst.IsValid() && c.wg != nil {
		c.wg.repoint(p.key)
		// Leave a moment for the handshake traffic brings anyway: two
		// handshakes started at once by both sides can cross and stall.
		p.handshakeCheck = now.Add(handshakeCheckDelay)
	}
	dst, name := r.Dst, r.Kind()
	if r.Relay {
		why += "; relayed because " + c.relayReason(p, now)
	}
	c.log.Info("path changed", "peer", p.label(), "from", p.path, "to", name, "endpoint", dst, "why", why)
	p.history = append(p.history, PathChange{Time: now, From: p.path, To: name, Why: why})
	for len(p.history) > 0 && now.Sub(p.history[0].Time) > historyKeep {
		p.history = p.history[1:]
	}
	p.path = name
}

// handshakeCheckDelay is how long after a route change WireGuard may take
// to make a session by itself before the control plane starts one.
const handshakeCheckDelay = time.Second

// silenceLimit is how long a peer may go unheard, while WireGuard sends to
// it or has lately exchanged traffic with it, before its path is probed:
// longer than a round trip and a TCP delayed ACK, short enough that a
// tunnel in use recovers from a dead path within seconds.
const silenceLimit = 1500 * time.Millisecond

// activeWindow: a peer that exchanged traffic this recently counts as in
// use, and its path is checked whenever it falls silent; past it, the
// 25 s heartbeat is enough, and an idle tunnel stays quiet.
const activeWindow = 10 * time.Second

// checkSilence probes p's direct path when the peer falls silent while the
// tunnel is in use — WireGuard keeps sending and nothing comes back, or
// packets were flowing and stopped: the NAT mapping may be gone (on our
// side, where we would not notice, or on the peer's), or the network
// changed under us. The probes either clear it within a round trip or drop
// the path within nat.SuspectTimeout.
//
// On the relay, silence means the rendezvous may not know where we are any
// more (the NAT remapped us, the host moved, or the rendezvous restarted),
// so it cannot relay to us nor take our frames: we register again at once.
func (c *control) checkSilence(p *peer, now time.Time) {
	r := p.ep.Route()
	if !r.Dst.IsValid() {
		return
	}
	sent, recv := time.Unix(0, p.ep.lastSent.Load()), time.Unix(0, p.ep.lastRecv.Load())
	heard := recv
	if probed := p.punch.LastHeard(); probed.After(heard) {
		heard = probed
	}
	lastUse := sent // keepalives left out: they are not use
	if data := time.Unix(0, p.ep.lastData.Load()); data.After(lastUse) {
		lastUse = data
	}
	inUse := now.Sub(lastUse) < activeWindow
	if sent.Sub(heard) <= silenceLimit && !(inUse && now.Sub(heard) > silenceLimit) {
		return
	}
	switch {
	case !r.Relay:
		p.punch.Suspect(now)
	case now.Sub(c.reregistered) > silenceLimit:
		c.reregister(now)
	}
}

// peerHasNoDirectPath follows a handshake of the peer's that came through
// the relay while our route to it is direct: it has no direct path to us
// (it restarted, or its NAT forgot it), so ours likely leads nowhere. Leave
// it now for the relay, and ask the rendezvous to introduce us again, so
// that both sides punch afresh.
func (c *control) peerHasNoDirectPath(k key.Key, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[k]
	if p == nil || p.ep.Route().Relay || !p.punch.Path().Addr.IsValid() || p.relayVia == nil {
		return
	}
	c.log.Info("the peer's handshake came through the relay: leaving the direct path", "peer", p.label(), "endpoint", p.punch.Path().Addr)
	p.punch.Drop()
	c.closeBirthday(p, true)
	p.nextBirthday, p.birthdayBackoff = time.Time{}, minBirthdayBackoff
	p.nextQuery, p.backoff = now, minBackoff
	c.updateRoute(p, now, "the peer's handshake came through the relay")
}

// reregister registers with every rendezvous now: our endpoint may have
// changed, and the rendezvous relays and introduces by the endpoint it saw
// last.
func (c *control) reregister(now time.Time) {
	c.reregistered = now
	for _, s := range c.servers {
		if s.addr.IsValid() {
			// A registration in flight is not taken for the server's
			// silence: its answer may be on the way to our old address.
			s.next, s.pending = now, false
		}
	}
}

// netSettleTime lets a burst of address and route changes (an interface
// going, another coming with its address and default route) end before
// acting on it, so that registrations leave by the new route.
const netSettleTime = 100 * time.Millisecond

// networkChanged follows a change of the host's addresses or routes: our
// public endpoint, our NAT and our local candidates may all be new. It
// registers again with every rendezvous at once (which introduces us anew
// to every peer that wants us), asks STUN afresh, and probes every direct
// path, which a move breaks without a sound: the other side would only
// notice its silence seconds later. Callers hold c.mu.
func (c *control) networkChanged(now time.Time) {
	c.log.Info("network changed: registering again and checking paths")
	c.reregister(now)
	// The new network may block UDP, or let it through again: whether it
	// does is found out as at start (checkBlocked, udpBack). Until STUN
	// answers, our NAT is unknown.
	if !c.udpBlocked() {
		c.mapping = nat.MappingUnknown
	}
	c.udpHeard, c.udpSince = false, now
	for _, s := range c.servers {
		if s.addr.IsValid() {
			// Both answers anew before the NAT is classified again.
			s.mapped, s.otherSeen = netip.AddrPort{}, netip.AddrPort{}
			c.sendSTUN(s, s.addr)
			if s.other.IsValid() && !c.udpBlocked() {
				c.sendSTUN(s, s.other)
			}
		}
	}
	for _, p := range c.peers {
		if r := p.ep.Route(); r.Dst.IsValid() && !r.Relay {
			p.punch.Suspect(now)
		}
		p.punch.ResetHeartbeat() // other NATs now
	}
}

// remember keeps p's confirmed endpoint, and our port, for the next run.
func (c *control) remember(p *peer, ep netip.AddrPort, now time.Time) {
	if c.statePath == "" {
		return
	}
	if c.saved.Peers == nil {
		c.saved.Peers = map[string]savedPeer{}
	}
	c.saved.ListenPort = c.bind.Port()
	c.saved.Peers[p.key.String()] = savedPeer{Endpoint: ep, Confirmed: now}
	if err := c.saved.save(c.statePath); err != nil {
		c.log.Warn("cannot save state", "file", c.statePath, "err", err)
	}
}

// punchDuration is how long to punch p: briefly when the NATs rule out a
// direct path through them, since only a shared LAN can still give one.
func (c *control) punchDuration(p *peer) time.Duration {
	if c.mapping == nat.MappingBlocked || p.nat == nat.MappingBlocked ||
		c.mapping == nat.MappingHard && p.nat == nat.MappingHard {
		return nat.ShortPunchDuration
	}
	return nat.PunchDuration
}

// relayReason says in plain words why p is relayed.
func (c *control) relayReason(p *peer, now time.Time) string {
	// What rules a direct path out comes first: a round still punching
	// then only looks for a shared LAN.
	switch {
	case c.mapping == nat.MappingBlocked:
		return "UDP blocked on this network"
	case p.nat == nat.MappingBlocked:
		return "UDP blocked on the peer's network"
	case c.mapping == nat.MappingHard && p.nat == nat.MappingHard:
		return "both NATs map per destination"
	case p.punch.Punching(now):
		return "punching in progress"
	case c.sharesPublicIP(p):
		return "the peer is behind our own public address, but no LAN path answered and the NAT does not loop packets back to itself (no hairpinning)"
	}
	return "no reply from the peer's candidates"
}

// sharesPublicIP reports whether p was introduced at our own public
// address: two hosts behind one NAT (a carrier's, say) on different LANs.
func (c *control) sharesPublicIP(p *peer) bool {
	for s, ep := range p.observed {
		if s.observed.IsValid() && s.observed.Addr() == ep.Addr() {
			return true
		}
	}
	return false
}

// punchedAddr is the direct path pe uses, if any, for logs.
func (pe *PeerEndpoint) punchedAddr() netip.AddrPort {
	if r := pe.Route(); !r.Relay {
		return r.Dst
	}
	return netip.AddrPort{}
}

func (p *peer) label() string {
	if p.name != "" {
		return p.name
	}
	return p.key.String()
}

// historyCopy returns p's path history for status.
func (p *peer) historyCopy() []PathChange { return slices.Clone(p.history) }
