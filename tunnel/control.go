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
	"github.com/punchtun/punchtun/rendezvous"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/tunnel/key"
)

// control is the peer's control plane: it registers with the rendezvous
// servers, learns the public address with STUN, punches holes to the peers
// the rendezvous introduces, and keeps each peer's PeerEndpoint on the best
// confirmed path. It runs one goroutine; everything it owns is guarded by mu
// so that status can read it.
type control struct {
	log       *slog.Logger
	priv, pub key.Key
	bind      *Bind
	iface     string
	own       []netip.Prefix // the tunnel's addresses: never candidates

	in      chan inbound
	done    chan struct{}
	stopped chan struct{}
	Dropped atomic.Uint64 // control packets dropped: unauthenticated, replayed, or queue full

	mu      sync.Mutex
	clock   wire.Clock
	servers []*server
	peers   map[key.Key]*peer
	wants   []key.Key
}

type inbound struct {
	pkt []byte
	src netip.AddrPort
	at  time.Time
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
	observed   netip.AddrPort // our endpoint as the rendezvous sees it
	mapped     netip.AddrPort // our endpoint as its STUN answer says
	stunTx     nat.STUNTxID
	lastTime   uint64 // replay guard for its messages
	next       time.Time
	backoff    time.Duration
}

// peer is a peer whose address the control plane finds.
type peer struct {
	name   string
	key    key.Key
	shared wire.SharedKey
	ep     *PeerEndpoint
	punch  *nat.Punch

	nextQuery time.Time
	backoff   time.Duration
}

const (
	tickInterval = 50 * time.Millisecond
	minBackoff   = time.Second
	inboundQueue = 256
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
		log:     log,
		priv:    priv,
		pub:     priv.Public(),
		iface:   iface,
		own:     own,
		in:      make(chan inbound, inboundQueue),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
		peers:   make(map[key.Key]*peer),
	}
	for _, s := range servers {
		c.servers = append(c.servers, &server{hostport: s.HostPort, pub: s.Key, shared: wire.NewSharedKey(priv, s.Key), backoff: minBackoff})
	}
	for _, pc := range peers {
		p := &peer{name: pc.Name, key: pc.Key, shared: wire.NewSharedKey(priv, pc.Key), backoff: minBackoff}
		leader := bytes.Compare(c.pub[:], pc.Key[:]) < 0
		p.punch = nat.NewPunch(leader, func(dst netip.AddrPort, m wire.Body) { c.sendSealed(dst, &p.shared, m) })
		c.peers[pc.Key] = p
		c.wants = append(c.wants, pc.Key)
	}
	return c
}

// deliver is the Bind's control callback: it runs on WireGuard's receive
// goroutines, so it only copies and queues.
func (c *control) deliver(pkt []byte, src netip.AddrPort) {
	select {
	case c.in <- inbound{pkt: bytes.Clone(pkt), src: src, at: time.Now()}:
	default:
		c.Dropped.Add(1)
	}
}

func (c *control) start(bind *Bind) {
	c.bind = bind
	for _, p := range c.peers {
		p.ep = bind.PeerEndpoint(p.key)
	}
	go c.run()
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
		case now := <-t.C:
			c.tick(now)
		}
	}
}

// stop deregisters from every rendezvous and ends the control goroutine.
func (c *control) stop() {
	close(c.done)
	<-c.stopped
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.servers {
		if s.registered {
			c.sendSealed(s.addr, &s.shared, &wire.Deregister{Time: c.now()})
		}
	}
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
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.servers {
		c.tickServer(s, now)
	}
	for _, p := range c.peers {
		switch p.punch.Tick(now) {
		case nat.EventLost:
			c.pathLost(p, now)
		}
		if !p.punch.Path().Addr.IsValid() && !p.punch.Punching(now) && !now.Before(p.nextQuery) {
			c.query(p, now)
		}
	}
}

func (c *control) tickServer(s *server, now time.Time) {
	if !s.addr.IsValid() {
		if !s.resolving {
			s.resolving = true
			go c.resolve(s)
		}
		return
	}
	if now.Before(s.next) {
		return
	}
	if s.pending {
		// The last registration went unanswered.
		if s.registered {
			c.log.Warn("rendezvous stopped answering", "rendezvous", s.hostport)
		}
		s.registered = false
	}
	if !s.registered {
		// Learn our public address from the same socket WireGuard uses;
		// the rendezvous is a STUN server too.
		tx, req := nat.NewBindingRequest()
		s.stunTx = tx
		c.bind.SendTo(req, s.addr)
	}
	reg := &wire.Register{
		Time:       c.now(),
		Candidates: nat.LocalCandidates(c.bind.Port(), c.iface, c.own),
		Wants:      c.wants,
	}
	c.sendSealed(s.addr, &s.shared, reg)
	s.pending = true
	if s.registered {
		s.next = now.Add(minBackoff) // time for the refresh's ack
		return
	}
	s.next = now.Add(s.backoff)
	s.backoff = min(2*s.backoff, rendezvous.RefreshInterval)
}

// resolve looks the rendezvous up off the control goroutine, retrying while
// the name does not resolve (the network may not be up yet).
func (c *control) resolve(s *server) {
	for {
		addr, err := resolveUDP(s.hostport)
		if err == nil {
			c.mu.Lock()
			s.addr, s.resolving = addr, false
			c.mu.Unlock()
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

func resolveUDP(hostport string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return ap, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	pn, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return netip.AddrPort{}, err
	}
	// Prefer IPv4: a home network that has IPv6 has IPv4 too, rarely the reverse.
	best := addrs[0]
	for _, a := range addrs {
		if a.Unmap().Is4() {
			best = a
			break
		}
	}
	return netip.AddrPortFrom(best.Unmap(), uint16(pn)), nil
}

// query asks every registered rendezvous for an introduction to p, backing
// off while none comes.
func (c *control) query(p *peer, now time.Time) {
	asked := false
	for _, s := range c.servers {
		if s.registered {
			c.sendSealed(s.addr, &s.shared, &wire.Query{Time: c.now(), Peer: p.key})
			asked = true
		}
	}
	if !asked {
		return
	}
	p.nextQuery = now.Add(p.backoff)
	p.backoff = min(2*p.backoff, rendezvous.RefreshInterval)
}

func (c *control) handle(m inbound) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if nat.IsSTUN(m.pkt) {
		c.handleSTUN(m)
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
	tx, mapped, err := nat.ParseBindingResponse(m.pkt)
	if err != nil {
		c.Dropped.Add(1)
		return
	}
	for _, s := range c.servers {
		if s.stunTx == tx && s.addr == m.src {
			if s.mapped != mapped {
				c.log.Info("public address learned by STUN", "rendezvous", s.hostport, "public", mapped)
			}
			s.mapped = mapped
			return
		}
	}
	c.Dropped.Add(1)
}

func (c *control) handleServer(s *server, h wire.Header, m inbound) {
	body, ok := c.open(m.pkt, h, &s.shared)
	if !ok {
		return
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
		if !s.registered && s.observed != b.Observed {
			c.log.Info("registered with rendezvous", "rendezvous", s.hostport, "public", b.Observed)
		}
		first := s.observed != b.Observed
		s.registered, s.pending, s.observed = true, false, b.Observed
		s.backoff = minBackoff
		s.next = m.at.Add(rendezvous.RefreshInterval)
		if first {
			// Ask at once for every peer we have no path to.
			for _, p := range c.peers {
				if !p.punch.Path().Addr.IsValid() {
					p.nextQuery, p.backoff = time.Time{}, minBackoff
				}
			}
		}
	case *wire.Intro:
		p := c.peers[b.Peer]
		if p == nil {
			c.Dropped.Add(1)
			return
		}
		p.punch.Start(m.at, append([]netip.AddrPort{b.Observed}, b.Candidates...))
		c.log.Info("punching", "peer", p.label(), "candidates", p.punch.Candidates())
		p.punch.Tick(m.at) // probe now, not at the next tick
	}
}

func (c *control) handlePeer(p *peer, h wire.Header, m inbound) {
	body, ok := c.open(m.pkt, h, &p.shared)
	if !ok {
		return
	}
	switch b := body.(type) {
	case *wire.Ping:
		p.punch.OnPing(m.at, m.src, b)
	case *wire.Pong:
		if p.punch.OnPong(m.at, m.src, b) == nat.EventChosen {
			c.pathChosen(p)
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

func (c *control) pathChosen(p *peer) {
	path := p.punch.Path()
	old := p.ep.Path()
	c.bind.SetPath(p.ep, path.Addr)
	p.backoff = minBackoff
	if old.IsValid() {
		c.log.Info("path changed", "peer", p.label(), "path", path.Kind, "endpoint", path.Addr, "from", old, "rtt", path.RTT)
	} else {
		c.log.Info("path chosen", "peer", p.label(), "path", path.Kind, "endpoint", path.Addr,
			"took", path.Took.Round(time.Millisecond), "rtt", path.RTT, "candidates", len(p.punch.Candidates()))
	}
}

func (c *control) pathLost(p *peer, now time.Time) {
	c.log.Warn("path lost", "peer", p.label(), "endpoint", p.ep.Path())
	c.bind.SetPath(p.ep, netip.AddrPort{})
	p.nextQuery, p.backoff = now, minBackoff
}

func (p *peer) label() string {
	if p.name != "" {
		return p.name
	}
	return p.key.String()
}
