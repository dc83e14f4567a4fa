package tunnel

import (
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/registration"
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

	// reg is where the registration stands and what is due when
	// (registration.Registration); the fields below are what the
	// rendezvous told us.
	reg       registration.Registration
	addr      netip.AddrPort // resolved; invalid until then
	relay     bool           // it relays for us
	observed  netip.AddrPort // our endpoint as the rendezvous sees it
	mapped    netip.AddrPort // our endpoint as its STUN answer says
	other     netip.AddrPort // its alternate address (STUN OTHER-ADDRESS)
	otherSeen netip.AddrPort // our endpoint as seen from there
	lastTime  uint64         // replay guard for its messages
	sentNAT   nat.Mapping    // what the registration in flight said of our NAT

	stream *wire.Stream // TCP, while UDP is blocked (tcp.go)
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
	due := s.reg.Tick(now, c.udpBlocked())
	if due.Resolve {
		hostport := s.hostport
		c.spawn(func() { c.resolve(s, hostport) })
		return
	}
	if due.Dial {
		addr := s.addr
		c.spawn(func() { c.dialTCP(s, addr) })
	}
	if due.Lost {
		c.log.Warn("rendezvous stopped answering", "rendezvous", s.hostport)
		c.serverChanged(s, now, "rendezvous stopped answering")
	}
	if due.STUN {
		c.sendSTUN(s, s.addr, now)
	}
	if due.Register {
		c.sendServer(s, &wire.Register{
			Time:       c.now(),
			NAT:        byte(c.mapping),
			Candidates: nat.LocalCandidates(c.bind.Port(), c.iface, c.own),
			Wants:      c.wants,
		})
		s.sentNAT = c.mapping
	}
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
		s.reg.Update(now)
	}
}

// resolve looks the rendezvous up on a helper goroutine, retrying while
// the name does not resolve (the network may not be up yet), and posts
// the address to the control goroutine.
func (c *control) resolve(s *server, hostport string) {
	for {
		addr, err := nat.Resolve(c.ctx, hostport)
		if err == nil {
			c.post(func() { c.resolved(s, addr) })
			return
		}
		c.log.Warn("cannot resolve rendezvous", "rendezvous", hostport, "err", err)
		select {
		case <-c.done:
			return
		case <-time.After(5 * time.Second):
		}
	}
}

func (c *control) resolved(s *server, addr netip.AddrPort) {
	s.addr = addr
	s.reg.Resolved()
	c.setRelays()
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
	case *wire.TURNOffer:
		t = b.Time
	case *wire.Relayed:
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
	case *wire.TURNOffer:
		c.onTURNOffer(b, m.at)
	case *wire.Relayed:
		c.onRelayed(b, m.at)
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
		p.turnSent = netip.AddrPort{} // it may have restarted: tell it our relayed address again
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
	moved := s.observed != ack.Observed
	// A NAT discovered after the registration left is told at once.
	first := s.reg.Acked(now, s.sentNAT != c.mapping)
	s.observed, s.relay = ack.Observed, ack.Flags&wire.AckRelay != 0
	if !first && !moved {
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
		s.reg.RegisterNow(now)
	}
}
