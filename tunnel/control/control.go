// Package control is the peer's control plane. It registers with the
// rendezvous servers, learns the public address and the NAT's behaviour
// with STUN, punches holes to the peers the rendezvous introduces, and
// keeps each peer on the best route: a confirmed direct path (punched, or
// birthday-punched from behind a hard NAT), else a TURN relay, else the
// rendezvous's relay over UDP or TCP. It answers `punchtun ping` and
// publishes a view of itself for status and metrics.
//
// One goroutine (run) owns all of its state: helpers that wait —
// resolving names, dialing and reading TCP, TURN allocations, birthday
// sockets' readers — post what they learn to it, and status reads the
// View it publishes after every event. Nothing it does waits on a lock
// that status or the data path needs.
//
// It steers the data path only through tunnel/link's interfaces, and the
// WireGuard device and the host through WireGuard and Host: it imports
// neither tunnel/bind nor tunnel/osnet, and its tests drive it with fakes
// of all three on a fake clock.
package control

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/policy"
	"github.com/punchtun/punchtun/tunnel/turnrelay"
)

// Control is the control plane of one interface.
type Control struct {
	log  *slog.Logger
	priv key.Private
	pub  key.Key
	data link.DataPath
	wg   WireGuard
	host Host

	iface string
	own   []netip.Prefix // the tunnel's addresses: never candidates

	in chan inbound
	// gossipIn is the members' gossip, admitted by its gate (gossip.go):
	// a queue of its own, so that nothing a member sends in-tunnel takes
	// a place the rendezvous's messages need.
	gossipIn chan inbound
	done     chan struct{}
	stopped  chan struct{}
	// netChanged signals a change of the host's addresses or routes
	// (Host.WatchNetwork).
	netChanged chan struct{}
	// pathChecks names destinations whose path MTU to look up
	// (pathmtu.go): a route changed, or a batch to it was too big.
	pathChecks chan netip.AddrPort
	ifaceMTU   int
	// mark is the FwMark every socket of ours carries (0: none), so that
	// policy routing keeps it out of the tunnel (the full tunnel).
	mark uint32
	// relayedInitiations names peers whose handshake came through a
	// relay while our route to them is direct
	// (link.DataPath.OnRelayedInitiation).
	relayedInitiations chan key.Key
	// relayedOnTURN names peers whose packets came through a rendezvous's
	// relay while our route to them is TURN (OnRelayedWhileTURN).
	relayedOnTURN chan key.Key
	// unknownDsts names addresses of the network the data path holds
	// packets to (members.go).
	unknownDsts chan netip.Addr
	Dropped     atomic.Uint64 // control packets dropped: unauthenticated, replayed, or queue full
	// workers are the goroutines the control plane starts (spawn): the
	// control goroutine, the network watch, resolvers, TCP dialers and
	// readers, birthday sockets' and TURN allocations' readers. Stop ends
	// and waits for them all; ctx, cancelled by Stop, bounds what they
	// wait for.
	workers sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
	// dial connects to a rendezvous over TCP (net.Dialer's; a test's
	// fake transport in control_test.go).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// actions are posted by helpers and callers to run on the control
	// goroutine (post, call).
	actions chan func()
	// view is what status reads, published by the control goroutine.
	view atomic.Pointer[View]

	clock wire.Clock
	// udpSince is when we started waiting for a first UDP answer: at
	// start, and after each network change; stunSent when the first STUN
	// request left since then (zero: none yet — the rendezvous's name may
	// not resolve yet).
	udpSince, stunSent time.Time
	// blockedAt is when UDP was last taken for blocked; nextUDPProbe when
	// to ask STUN over UDP again while that is recent; lastTick when tick
	// last ran (network.go: a tick far later than due is a resume).
	blockedAt, nextUDPProbe, lastTick time.Time
	servers                           []*server
	peers                             map[key.Key]*peer
	wants                             []key.Key
	mapping                           nat.Mapping // our NAT, as STUN tells it
	// What the last run remembered (state.go), and where to keep it.
	saved     State
	statePath string
	// kept is whether the network's state files could be written (state.go).
	kept kept
	// udpHeard: some rendezvous answered over UDP since udpSince.
	udpHeard bool
	// reregistered is when a lost path or a silent relay last made us
	// register again.
	reregistered time.Time
	// netSettle: the host's network changed; act once it has been still
	// for netSettleTime (zero: nothing pending).
	netSettle time.Time
	stun      map[nat.STUNTxID]stunProbe
	turn      turnRelay   // relaying through TURN servers (turn.go)
	members   members     // the network's members (members.go)
	docs      documents   // the network's policy and revocations (documents.go)
	gossip    gossipState // the documents' gossip with members (gossip.go)
	portmap   portMapper  // the router's port forward to us (portmap.go)
}

// WireGuard is what the control plane asks of the WireGuard device.
type WireGuard interface {
	// Repoint makes WireGuard send to the peer's endpoint again, in case
	// its roaming followed a packet elsewhere.
	Repoint(peer key.Key) error
	// HandshakeIfNone starts a handshake with the peer unless WireGuard
	// has had one: a process that restarted has no session while the
	// peer holds the old one, whose packets it cannot read, and nobody
	// would start a new one until the peer's 15 s timeout.
	HandshakeIfNone(peer key.Key)
	// SetPeerMTU routes the peer's AllowedIPs with an MTU of mtu (0: the
	// interface's).
	SetPeerMTU(peer key.Key, mtu int) error
	// Rehandshake starts a new handshake with the peer now, whatever
	// session WireGuard holds (after a resume, it is one the peer forgot).
	Rehandshake(peer key.Key)
	// AddMember adds a member to WireGuard, or replaces its AllowedIPs,
	// keeping its session; RemoveMember takes it out.
	AddMember(peer key.Key, allowed []netip.Prefix) error
	RemoveMember(peer key.Key) error
}

// Host is what the control plane asks of the host's network.
type Host interface {
	// PathMTU is the path MTU the kernel knows for dst on the route our
	// sockets (marked with mark) take; 0 if none below the links'.
	PathMTU(dst netip.Addr, mark uint32) int
	// WatchNetwork signals changed (without blocking) whenever the host
	// gains or loses an address or a default route, until done closes.
	WatchNetwork(done <-chan struct{}, changed chan<- struct{})
}

// inbound is a packet for the control goroutine.
type inbound struct {
	pkt []byte
	src netip.AddrPort
	at  time.Time
	tcp bool         // came over a rendezvous's TCP stream
	via *net.UDPConn // came in on this birthday socket, not the shared one
	// turn: came through our TURN allocation, from a peer's relayed
	// address (a hello, or a relay-framed probe: turn.go)
	turn *turnrelay.Allocation
	// gossip: a member's gossip from inside the tunnel, from this address
	// (gossip.go), on gossipIn
	gossip netip.Addr
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
	// udpGiveUp is how long after the first STUN request without any
	// answer from any rendezvous before UDP is taken for blocked and the
	// rendezvous are reached over TCP (happy eyeballs: a STUN answer takes
	// a round trip, a few to a hundred milliseconds; waiting seconds cost
	// every start on a network that blocks UDP that long). Taken for
	// blocked wrongly — the first answers lost — UDP is asked again every
	// udpProbeEvery for udpProbeFor, and the first answer leaves TCP.
	udpGiveUp     = 300 * time.Millisecond
	udpProbeEvery = time.Second
	udpProbeFor   = 30 * time.Second
	// historyKeep is how far back the path history goes.
	historyKeep = time.Hour
)

// New returns the control plane of cfg, not yet started. statePath is
// where confirmed endpoints are kept for the next run ("" for nowhere),
// and saved what the last run kept.
func New(log *slog.Logger, cfg Config, statePath string, saved State) *Control {
	c := &Control{
		log:                log,
		priv:               cfg.PrivateKey,
		pub:                cfg.PrivateKey.Public(),
		iface:              cfg.Interface,
		own:                cfg.Addresses,
		ifaceMTU:           cfg.MTU,
		statePath:          statePath,
		saved:              saved,
		in:                 make(chan inbound, inboundQueue),
		gossipIn:           make(chan inbound, gossipQueue),
		actions:            make(chan func(), 64),
		pathChecks:         make(chan netip.AddrPort, 16),
		relayedInitiations: make(chan key.Key, 16),
		relayedOnTURN:      make(chan key.Key, 16),
		unknownDsts:        make(chan netip.Addr, 64),
		done:               make(chan struct{}),
		stopped:            make(chan struct{}),
		peers:              make(map[key.Key]*peer),
		stun:               make(map[nat.STUNTxID]stunProbe),
	}
	c.turn.c, c.members.c, c.docs.c, c.kept.log = c, c, c, log
	c.portmap.init(c, cfg.PortMapping)
	c.docs.filter = policy.New()
	c.docs.filter.OnGossip(func(src netip.Addr, body []byte) { c.enqueue(body, inbound{gossip: src}) })
	if statePath != "" {
		c.docs.path = strings.TrimSuffix(statePath, ".json") + ".documents"
		c.members.newestPath = strings.TrimSuffix(statePath, ".json") + ".certs"
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.dial = (&net.Dialer{}).DialContext // Start sets the mark
	for _, s := range cfg.Servers {
		c.addServer(s)
	}
	for _, pc := range cfg.Peers {
		c.addPeer(pc)
	}
	c.members.configure(cfg, time.Now())
	c.docs.configure(cfg, time.Now())
	return c
}

// Deliver is the data path's control callback: it runs on WireGuard's
// receive goroutines, so it only copies and queues.
func (c *Control) Deliver(pkt []byte, src netip.AddrPort) { c.enqueue(pkt, inbound{src: src}) }

// enqueue hands a received packet to the control goroutine, copied (the
// caller's buffer is reused); a full queue drops it. Gossip goes through
// its gate, to a queue of its own.
func (c *Control) enqueue(pkt []byte, m inbound) {
	m.at = time.Now()
	q := c.in
	if m.gossip.IsValid() {
		if !c.gossip.gate.admit(m.gossip, pkt, m.at) {
			return
		}
		q = c.gossipIn
	}
	m.pkt = append([]byte(nil), pkt...)
	select {
	case q <- m:
	default:
		if q == c.gossipIn {
			c.gossip.gate.Limited.Add(1)
			return
		}
		c.Dropped.Add(1)
	}
}

// notify sends on ch without blocking: a full channel means the control
// goroutine has such news pending anyway.
func notify[T any](ch chan<- T) func(T) {
	return func(v T) {
		select {
		case ch <- v:
		default:
		}
	}
}

// Start runs the control plane over data, the WireGuard device wg and the
// host; every socket it opens carries mark.
func (c *Control) Start(data link.DataPath, wg WireGuard, host Host, mark uint32) {
	c.data, c.wg, c.host, c.mark = data, wg, host, mark
	c.dial = (&net.Dialer{Control: markSocket(mark)}).DialContext
	c.udpSince = time.Now()
	for _, p := range c.peers {
		p.ep = data.Peer(p.key)
	}
	data.OnMsgSize(c.queuePathCheck)
	data.OnRelayedInitiation(notify(c.relayedInitiations))
	data.OnRelayedWhileTURN(notify(c.relayedOnTURN))
	data.OnUnknownDestination(notify(c.unknownDsts))
	c.netChanged = make(chan struct{}, 1)
	c.spawn(func() { host.WatchNetwork(c.done, c.netChanged) })
	c.portmap.start()
	c.spawn(c.run)
}

// spawn runs f on a goroutine that Stop waits for.
func (c *Control) spawn(f func()) {
	c.workers.Add(1)
	go func() {
		defer c.workers.Done()
		f()
	}()
}

// run is the control goroutine: it alone touches the control plane's
// state.
func (c *Control) run() {
	defer close(c.stopped)
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	c.tick(time.Now())
	c.publish(time.Now())
	for {
		select {
		case <-c.done:
			c.shutdown()
			return
		case m := <-c.in:
			c.handle(m)
		case m := <-c.gossipIn:
			c.docs.gossip(m.gossip, m.pkt, m.at)
		case f := <-c.actions:
			f()
		case dst := <-c.pathChecks:
			c.checkPathMTU(dst)
		case k := <-c.relayedOnTURN:
			if p := c.peers[k]; p != nil {
				c.turn.peerLeft(p, time.Now())
			}
		case dst := <-c.unknownDsts:
			c.members.unknownDestination(dst, time.Now())
		case k := <-c.relayedInitiations:
			if p := c.peers[k]; p != nil {
				p.hasNoDirectPath(time.Now())
			}
		case <-c.netChanged:
			c.netSettle = time.Now().Add(netSettleTime)
		case now := <-t.C:
			c.tick(now)
		}
		c.publish(time.Now())
	}
}

// post hands f to the control goroutine, which runs it between events; it
// reports false, and f never runs, once the control plane is stopping.
func (c *Control) post(f func()) bool {
	select {
	case c.actions <- f:
		return true
	case <-c.done:
		return false
	}
}

// call runs f on the control goroutine and waits for it; false if the
// control plane stopped first.
func (c *Control) call(f func()) bool {
	ran := make(chan struct{})
	if !c.post(func() { f(); close(ran) }) {
		return false
	}
	select {
	case <-ran:
		return true
	case <-c.done:
		return false
	}
}

// Stop ends the control goroutine, which deregisters on its way out, and
// waits for every helper.
func (c *Control) Stop() {
	close(c.done)
	c.cancel()
	<-c.stopped
	c.workers.Wait()
}

// shutdown deregisters from every rendezvous and closes the TCP streams,
// birthday sockets and the TURN allocation, whose readers then end.
func (c *Control) shutdown() {
	for _, s := range c.servers {
		if s.reg.Registered() {
			c.sendServer(s, &wire.Deregister{Time: c.now()})
		}
		if s.stream != nil {
			s.stream.Close()
		}
	}
	for _, p := range c.peers {
		p.closeBirthday(true)
	}
	c.turn.close(time.Now(), "shutting down")
	c.portmap.shutdown()
	c.members.flushNewest(c.lastTick)
	c.docs.flush()
}

func (c *Control) now() uint64 { return c.clock.Next(uint64(time.Now().UnixNano())) }

func (c *Control) sendSealed(dst netip.AddrPort, shared *wire.SharedKey, m wire.Body) {
	if !dst.IsValid() {
		return
	}
	b := wire.Seal(make([]byte, 0, wire.Overhead+64), m.Type(), c.pub, shared, m.Append(nil))
	if err := c.data.SendTo(b, dst); err != nil {
		c.log.Debug("send failed", "to", dst, "type", m.Type(), "err", err)
	}
}

func (c *Control) tick(now time.Time) {
	c.checkResume(now)
	// Before the servers' turn: the registrations it calls for leave in
	// this tick.
	if !c.netSettle.IsZero() && !now.Before(c.netSettle) {
		c.netSettle = time.Time{}
		c.networkChanged(now)
	}
	c.portmap.tick(now)
	for _, s := range c.servers {
		c.tickServer(s, now)
	}
	c.checkBlocked(now)
	c.probeUDP(now)
	c.turn.tick(now)
	c.members.tick(now)
	c.docs.tick(now)
	for _, p := range c.peers {
		p.tick(now)
	}
}

func (c *Control) handle(m inbound) {
	if nat.IsSTUN(m.pkt) {
		c.handleSTUN(m)
		return
	}
	if wire.IsRelay(m.pkt) {
		// A probe of punchtun ping, or its pong, through a relay (ping.go).
		from, inner, err := wire.ParseRelay(m.pkt)
		p := c.peers[from]
		h, herr := wire.ParseHeader(inner)
		if p == nil || err != nil || herr != nil || h.Sender != from {
			c.Dropped.Add(1)
			return
		}
		p.handleRelayedProbe(h, inner, m)
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
		if m.turn != nil {
			c.turn.onHello(p, h, m)
			return
		}
		p.handle(h, m)
		return
	}
	// Our own probe that came back to us from a LAN candidate with our own
	// address, or a stranger: nothing to answer.
	c.Dropped.Add(1)
}

func (c *Control) open(pkt []byte, h wire.Header, shared *wire.SharedKey) (wire.Body, bool) {
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
