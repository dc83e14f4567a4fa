package tunnel

import (
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// The rendezvous client: each rendezvous is resolved, registered with and
// refreshed (backing off while it is silent), asked for STUN on the shared
// socket, and left for TCP while UDP is blocked (tcp.go); what it sends —
// acknowledgements and introductions — is handled here.

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
	sent   time.Time
}

// stunLifetime is how long a STUN request waits for its answer; then it
// is forgotten, so that a silent rendezvous does not grow the table.
const stunLifetime = 10 * time.Second

// ServerConfig names one rendezvous.
type ServerConfig struct {
	HostPort string
	Key      key.Key
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
		c.sendSTUN(s, s.addr, now)
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
		c.sendSTUN(s, s.addr, now)
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

func (c *control) sendSTUN(s *server, dst netip.AddrPort, now time.Time) {
	tx, req := nat.NewBindingRequest()
	for tx, p := range c.stun {
		if now.Sub(p.sent) > stunLifetime {
			delete(c.stun, tx)
		}
	}
	c.stun[tx] = stunProbe{server: s, dst: dst, sent: now}
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
			c.sendSTUN(s, s.other, m.at)
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
