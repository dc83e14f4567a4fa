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
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/nat/portmap"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/policy"
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
	// noLocal: the host's addresses are never candidates either.
	noLocal bool

	in chan inbound
	// gossipIn is the members' gossip, admitted by its gate (gossipGate):
	// a queue of its own, so that nothing a member sends in-tunnel takes
	// a place the rendezvous's messages need.
	gossipIn chan inbound
	done     chan struct{}
	stopped  chan struct{}
	// netChanged signals a change of the host's addresses or routes
	// (Host.WatchNetwork).
	netChanged chan struct{}
	// pathChecks names destinations whose path MTU to look up: a route
	// changed, or a batch to it was too big.
	pathChecks chan netip.AddrPort
	// mark is the FwMark every socket of ours carries (0: none), so that
	// policy routing keeps it out of the tunnel (the full tunnel).
	mark uint32
	// relayedInitiations names peers whose handshake came through a
	// relay while our route to them is direct
	// (link.Events.RelayedInitiation).
	relayedInitiations chan key.Key
	// relayedOnTURN names peers whose packets came through a rendezvous's
	// relay while our route to them is TURN (link.Events.RelayedWhileTURN).
	relayedOnTURN chan key.Key
	// unknownDsts names addresses of the network the data path holds
	// packets to (members).
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
	// dial connects to a rendezvous over TCP (net.Dialer's; in tests a
	// fake transport).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// actions are posted by helpers and callers to run on the control
	// goroutine (post, call).
	actions chan func()
	// view is what status reads, published by the control goroutine.
	view atomic.Pointer[View]

	// clock is where every time the control plane acts on comes from;
	// stamps makes the times its messages carry (stamp).
	clock  clock
	stamps wire.Clock
	// udpSince is when we started waiting for a first UDP answer: at
	// start, and after each network change; stunSent when the first STUN
	// request left since then (zero: none yet — the rendezvous's name may
	// not resolve yet).
	udpSince, stunSent time.Time
	// blockedAt is when UDP was last taken for blocked; nextUDPProbe when
	// to ask STUN over UDP again while that is recent; lastTick when tick
	// last ran (frozeFor: a tick far later than due is a resume).
	blockedAt, nextUDPProbe, lastTick time.Time
	servers                           []*server
	peers                             map[key.Key]*peer
	wants                             []key.Key
	mapping                           nat.Mapping // our NAT, as STUN tells it
	// kept is whether the network's state files could be written.
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
	turn      turnRelay  // relaying through TURN servers
	members   members    // the network's members
	docs      documents  // the network's policy and revocations
	portmap   portMapper // the router's port forward to us
	peerDeps  peerDeps   // what every peer asks of the rest
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
	// historyKeep is how far back the path history goes.
	historyKeep = time.Hour
)

// New returns the control plane of cfg, not yet started. statePath is
// where confirmed endpoints are kept for the next run ("" for nowhere),
// and saved what the last run kept.
func New(log *slog.Logger, cfg Config, statePath string, saved State) *Control {
	return newControl(log, cfg, statePath, saved, clockFunc(time.Now))
}

// newControl is New on clock.
func newControl(log *slog.Logger, cfg Config, statePath string, saved State, clock clock) *Control {
	c := &Control{
		log:                log,
		clock:              clock,
		priv:               cfg.PrivateKey,
		pub:                cfg.PrivateKey.Public(),
		iface:              cfg.Interface,
		own:                cfg.Addresses,
		noLocal:            cfg.NoLocalCandidates,
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
	c.kept.log = log
	c.members = members{log: log, self: c.pub, peers: c.peers, roster: c, rv: c, docs: &c.docs, kept: &c.kept}
	c.docs = documents{log: log, members: &c.members, rv: c, dropped: &c.Dropped, kept: &c.kept, filter: policy.New()}
	c.docs.filter.OnGossip(func(src netip.Addr, body []byte) { c.enqueue(body, inbound{gossip: src}) })
	if statePath != "" {
		c.docs.path = strings.TrimSuffix(statePath, ".json") + ".documents"
		c.members.newestPath = strings.TrimSuffix(statePath, ".json") + ".certs"
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.turn = turnRelay{host: c, clock: c.clock, log: log, peers: c.peers, ctx: c.ctx, dropped: &c.Dropped}
	c.portmap = portMapper{host: c, log: log, clock: c.clock, ctx: c.ctx, m: portmap.NewMachine(cfg.PortMapping), gateway: portmap.DefaultGateway}
	c.peerDeps = peerDeps{log: log, pub: c.pub, clock: c.clock, ctx: c.ctx, dropped: &c.Dropped, host: c, turn: &c.turn,
		mapper: &c.portmap, saved: saved, statePath: statePath, ifaceMTU: cfg.MTU}
	c.dial = (&net.Dialer{}).DialContext // Start sets the mark
	for _, s := range cfg.Servers {
		c.addServer(s)
	}
	for _, pc := range cfg.Peers {
		c.addPeer(pc)
	}
	now := clock.Now()
	c.members.configure(cfg, now)
	c.docs.configure(cfg, now)
	return c
}

// Filter is the network policy's filter, for the data path to wrap the
// TUN with; the control plane keeps it up to date.
func (c *Control) Filter() *policy.Filter { return c.docs.filter }

// Publish hands the interface a signed policy or revocation, as `punchtun
// network publish` does: verified, applied, kept and sent on; the error
// says why not.
func (c *Control) Publish(doc []byte) error {
	var err error
	if !c.call(func() { err = c.docs.publish(doc, c.clock.Now()) }) {
		return errors.New("the interface is stopping")
	}
	return err
}

// Events is what the data path is to tell the control plane; give it to
// the data path at construction.
func (c *Control) Events() link.Events { return events{c} }

// enqueue hands a received packet to the control goroutine, copied (the
// caller's buffer is reused); a full queue drops it. Gossip goes through
// its gate, to a queue of its own.
func (c *Control) enqueue(pkt []byte, m inbound) {
	m.at = c.clock.Now()
	q := c.in
	if m.gossip.IsValid() {
		if !c.docs.gossip.gate.admit(m.gossip, pkt, m.at) {
			return
		}
		q = c.gossipIn
	}
	m.pkt = append([]byte(nil), pkt...)
	select {
	case q <- m:
	default:
		if q == c.gossipIn {
			c.docs.gossip.gate.Limited.Add(1)
			return
		}
		c.Dropped.Add(1)
	}
}

// queuePathCheck asks the control goroutine to look up the path MTU to
// dst. It never blocks: a full queue means checks are pending anyway.
func (c *Control) queuePathCheck(dst netip.AddrPort) {
	select {
	case c.pathChecks <- dst:
	default:
	}
}

// Start runs the control plane over data, the WireGuard device wg and the
// host; every socket it opens carries mark.
func (c *Control) Start(data link.DataPath, wg WireGuard, host Host, mark uint32) {
	c.attach(data, wg, host)
	c.mark, c.turn.mark, c.peerDeps.mark = mark, mark, mark
	c.dial = (&net.Dialer{Control: markSocket(mark)}).DialContext
	c.portmap.dial, c.portmap.mark = c.dial, mark
	c.udpSince = c.clock.Now()
	c.netChanged = make(chan struct{}, 1)
	c.spawn(func() { host.WatchNetwork(c.done, c.netChanged) })
	c.portmap.start()
	c.spawn(c.run)
}

// attach gives the control plane, and the components that use them, the
// data path, WireGuard and the host; every peer gets its side in the data
// path.
func (c *Control) attach(data link.DataPath, wg WireGuard, host Host) {
	c.data, c.wg, c.host = data, wg, host
	c.members.wg, c.members.dsts, c.docs.inject, c.turn.data = wg, data, data, data
	c.peerDeps.data, c.peerDeps.wg = data, wg
	c.portmap.port = data.Port
	for _, p := range c.peers {
		p.ep = data.Peer(p.key)
	}
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
	c.tick(c.clock.Now())
	c.publish(c.clock.Now())
	for {
		select {
		case <-c.done:
			c.shutdown()
			return
		case m := <-c.in:
			c.handle(m)
		case m := <-c.gossipIn:
			c.docs.fromMember(m.gossip, m.pkt, m.at)
		case f := <-c.actions:
			f()
		case dst := <-c.pathChecks:
			fitPathMTUs(c.peers, dst, c.host.PathMTU(dst.Addr(), c.mark))
		case k := <-c.relayedOnTURN:
			if p := c.peers[k]; p != nil {
				c.turn.peerLeft(p, c.clock.Now())
			}
		case dst := <-c.unknownDsts:
			c.members.unknownDestination(dst, c.clock.Now())
		case k := <-c.relayedInitiations:
			if p := c.peers[k]; p != nil {
				p.hasNoDirectPath(c.clock.Now())
			}
		case <-c.netChanged:
			c.netSettle = c.clock.Now().Add(netSettleTime)
		case <-t.C:
			c.tick(c.clock.Now())
		}
		c.publish(c.clock.Now())
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
			c.sendServer(s, &wire.Deregister{Time: c.stamp()})
		}
		if s.stream != nil {
			s.stream.Close()
		}
	}
	for _, p := range c.peers {
		p.closeBirthday(true)
	}
	c.turn.close(c.clock.Now(), "shutting down")
	c.portmap.shutdown()
	c.members.flushNewest(c.lastTick)
	c.docs.flush()
}

// stamp is the time a message to a rendezvous or a peer carries: the
// clock's in nanoseconds, and always later than the last one, which the
// receiver's replay guard needs.
func (c *Control) stamp() uint64 { return c.stamps.Next(uint64(c.clock.Now().UnixNano())) }

func (c *Control) sendSealed(dst netip.AddrPort, shared *wire.SharedKey, m wire.Body) {
	if !dst.IsValid() {
		return
	}
	b := wire.Seal(make([]byte, 0, wire.Overhead+64), m.Type(), c.pub, shared, m.Append(nil))
	if err := c.data.Shared().Send([][]byte{b}, key.Key{}, dst); err != nil {
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
		// A probe of punchtun ping, or its pong, through a relay
		// (handleRelayedProbe).
		from, inner, err := wire.ParseRelay(m.pkt)
		p := c.peers[from]
		h, herr := wire.ParseHeader(inner)
		if p == nil || err != nil || herr != nil || h.Sender != from {
			c.Dropped.Add(1)
			return
		}
		c.handleRelayedProbe(p, h, inner, m)
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
		if m.came(link.TURN) {
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
