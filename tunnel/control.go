package tunnel

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/turnrelay"
)

// control is the peer's control plane: it registers with the rendezvous
// servers, learns the public address and the NAT's behaviour with STUN,
// punches holes to the peers the rendezvous introduces, and keeps each
// peer's PeerEndpoint on the best route: a confirmed direct path, else the
// relay. One goroutine (run) owns all of its state: helpers that wait —
// resolving names, dialing and reading TCP, birthday sockets — post what
// they learn to it (post), and status, metrics and ping read the view it
// publishes after every event (view.go). Nothing it does waits on a lock
// that status or the data path needs.
type control struct {
	log   *slog.Logger
	priv  key.Private
	pub   key.Key
	bind  *Bind
	iface string
	own   []netip.Prefix // the tunnel's addresses: never candidates
	wg    wireGuard

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
	// mark is the FwMark every socket of ours carries (0: none), so that
	// policy routing keeps it out of the tunnel (fulltunnel_linux.go).
	mark uint32
	// relayedInitiations names peers whose handshake came through a
	// relay while our route to them is direct (Bind.OnRelayedInitiation).
	relayedInitiations chan key.Key
	// relayedOnTURN names peers whose packets came through a rendezvous's
	// relay while our route to them is TURN (Bind.relayedWhileTURN).
	relayedOnTURN chan key.Key
	Dropped       atomic.Uint64 // control packets dropped: unauthenticated, replayed, or queue full
	// workers are the goroutines the control plane starts (spawn): the
	// control goroutine, the network watch, resolvers, TCP dialers and
	// readers, birthday sockets' readers. stop ends and waits for them
	// all; ctx, cancelled by stop, bounds what they wait for.
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
	view atomic.Pointer[controlView]

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
	turn      turnState // relaying through TURN servers (turn.go)
}

type inbound struct {
	pkt []byte
	src netip.AddrPort
	at  time.Time
	tcp bool         // came over a rendezvous's TCP stream
	via *net.UDPConn // came in on this birthday socket, not the shared one
	// turn: came through our TURN allocation, from a peer's relayed
	// address (a relay-framed probe: turn.go)
	turn *turnrelay.Allocation
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
	// udpGiveUp is how long without any answer from any rendezvous before
	// UDP is taken for blocked.
	udpGiveUp = 5 * time.Second
	// historyKeep is how far back the path history goes.
	historyKeep = time.Hour
)

func newControl(log *slog.Logger, priv key.Private, iface string, own []netip.Prefix, servers []ServerConfig, peers []PeerConfig) *control {
	c := &control{
		log:                log,
		priv:               priv,
		pub:                priv.Public(),
		iface:              iface,
		own:                own,
		in:                 make(chan inbound, inboundQueue),
		actions:            make(chan func(), 64),
		pathChecks:         make(chan netip.AddrPort, 16),
		relayedInitiations: make(chan key.Key, 16),
		relayedOnTURN:      make(chan key.Key, 16),
		done:               make(chan struct{}),
		stopped:            make(chan struct{}),
		peers:              make(map[key.Key]*peer),
		stun:               make(map[nat.STUNTxID]stunProbe),
	}
	c.turn.peers.Store(&map[netip.AddrPort]*PeerEndpoint{})
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.dial = (&net.Dialer{}).DialContext // start sets the mark
	for _, s := range servers {
		c.addServer(s)
	}
	for _, pc := range peers {
		c.addPeer(pc)
	}
	return c
}

// addServer adds a rendezvous to ask and register with.
func (c *control) addServer(sc ServerConfig) *server {
	s := &server{hostport: sc.HostPort, pub: sc.Key, shared: wire.NewSharedKey(c.priv, sc.Key)}
	c.servers = append(c.servers, s)
	return s
}

// addPeer adds a peer to find through the rendezvous; it is asked for at
// the next registration (wants).
func (c *control) addPeer(pc PeerConfig) *peer {
	p := &peer{name: pc.Name, key: pc.Key, shared: wire.NewSharedKey(c.priv, pc.Key), backoff: minBackoff,
		birthdayBackoff: minBirthdayBackoff, path: nat.PathNone.String(), observed: map[*server]netip.AddrPort{}}
	p.punch = nat.NewPunch(leads(c.pub, pc.Key), func(dst netip.AddrPort, pm nat.Probe) {
		m := probeMessage(pm)
		if conn := p.socketTo(dst); conn != nil {
			c.sendVia(conn, p, dst, m)
			return
		}
		c.sendSealed(dst, &p.shared, m)
	})
	if c.bind != nil {
		p.ep = c.bind.PeerEndpoint(pc.Key)
	}
	c.peers[pc.Key] = p
	c.wants = append(c.wants, pc.Key)
	return p
}

// probeMessage is the message that carries a Punch's probe or answer.
func probeMessage(m nat.Probe) wire.Body {
	if m.Answer {
		return &wire.Pong{TxID: m.TxID, Src: m.Src}
	}
	return &wire.Ping{TxID: m.TxID}
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

func (c *control) start(bind *Bind, wg wireGuard, mark uint32) {
	c.bind, c.wg, c.mark = bind, wg, mark
	c.dial = (&net.Dialer{Control: markSocket(mark)}).DialContext
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
	onTURN := func(k key.Key) {
		select {
		case c.relayedOnTURN <- k:
		default:
		}
	}
	bind.onRelayedWhileTURN.Store(&onTURN)
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

// run is the control goroutine: it alone touches the control plane's
// state.
func (c *control) run() {
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
		case f := <-c.actions:
			f()
		case dst := <-c.pathChecks:
			c.checkPathMTU(dst)
		case k := <-c.relayedOnTURN:
			c.peerLeftTURN(k, time.Now())
		case k := <-c.relayedInitiations:
			c.peerHasNoDirectPath(k, time.Now())
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
func (c *control) post(f func()) bool {
	select {
	case c.actions <- f:
		return true
	case <-c.done:
		return false
	}
}

// call runs f on the control goroutine and waits for it; false if the
// control plane stopped first.
func (c *control) call(f func()) bool {
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

// stop ends the control goroutine, which deregisters on its way out, and
// waits for every helper.
func (c *control) stop() {
	close(c.done)
	c.cancel()
	<-c.stopped
	c.workers.Wait()
}

// shutdown deregisters from every rendezvous and closes the TCP streams
// and birthday sockets, whose readers then end.
func (c *control) shutdown() {
	for _, s := range c.servers {
		if s.reg.Registered() {
			c.sendServer(s, &wire.Deregister{Time: c.now()})
		}
		if s.stream != nil {
			s.stream.Close()
		}
	}
	for _, p := range c.peers {
		c.closeBirthday(p, true)
	}
	c.closeTURN(time.Now(), "shutting down")
}

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
	c.tickTURN(now)
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

func (c *control) handle(m inbound) {
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
		if m.turn != nil {
			c.turnHello(p, h, m)
			return
		}
		c.handlePeer(p, h, m)
		return
	}
	// Our own probe that came back to us from a LAN candidate with our own
	// address, or a stranger: nothing to answer.
	c.Dropped.Add(1)
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

// netSettleTime lets a burst of address and route changes (an interface
// going, another coming with its address and default route) end before
// acting on it, so that registrations leave by the new route.
const netSettleTime = 100 * time.Millisecond

// networkChanged follows a change of the host's addresses or routes: our
// public endpoint, our NAT and our local candidates may all be new. It
// registers again with every rendezvous at once (which introduces us anew
// to every peer that wants us), asks STUN afresh, and probes every direct
// path, which a move breaks without a sound: the other side would only
// notice its silence seconds later.
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
			c.sendSTUN(s, s.addr, now)
			if s.other.IsValid() && !c.udpBlocked() {
				c.sendSTUN(s, s.other, now)
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
