package control

import (
	"context"
	"iter"
	"net/netip"
	"slices"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/registration"
	"github.com/punchtun/punchtun/tunnel/transport"
)

// The rendezvous client: each rendezvous is resolved, registered with and
// refreshed (backing off while it is silent), asked for STUN on the shared
// socket, and reached over TCP while UDP is blocked; what it sends —
// acknowledgements, introductions, TURN offers and relayed addresses —
// is handled here, and the peers' probes in relay frames.
//
// TCP fallback. Where a network blocks UDP, nothing punches and the UDP
// relay is out of reach too: the peer then talks to each rendezvous over
// TCP — registrations, intros and relayed WireGuard packets alike, framed
// by wire.Stream — first on the rendezvous's own port, then on 443, which
// firewalls that block UDP usually still let out. It keeps asking STUN over
// UDP at every refresh, and drops TCP as soon as UDP answers again.

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

	stream *transport.Stream // TCP, while UDP is blocked

	publish publishQueue // documents on their way to it
}

const (
	tcpDialTimeout = 3 * time.Second
	// tcpFallbackPort is tried when the rendezvous's own port is closed to TCP.
	tcpFallbackPort = 443
)

// sendServer sends m to s: over its TCP stream if there is one, else over
// the shared socket.
func (c *Control) sendServer(s *server, m wire.Body) {
	if s.stream == nil {
		c.sendSealed(s.addr, &s.shared, m)
		return
	}
	b := wire.Seal(make([]byte, 0, wire.Overhead+64), m.Type(), c.pub, &s.shared, m.Append(nil))
	if err := s.stream.Write(b); err != nil {
		c.log.Debug("send over TCP failed", "rendezvous", s.hostport, "type", m.Type(), "err", err)
	}
}

// sendRegistered sends every registered rendezvous what build makes with
// a fresh stamp.
func (c *Control) sendRegistered(build func(stamp uint64) wire.Body) {
	for s := range c.registeredServers() {
		c.sendServer(s, build(c.stamp()))
	}
}

func (c *Control) tickServer(s *server, now time.Time) {
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
		var local []netip.AddrPort
		if !c.noLocal {
			local = nat.LocalCandidates(c.data.Port(), c.iface, c.own)
		}
		c.sendServer(s, &wire.Register{
			Time:       c.stamp(),
			NAT:        byte(c.portmap.ourNAT()),
			Candidates: c.portmap.candidates(local),
			Wants:      c.wants,
			Network:    c.members.network,
			Cert:       c.members.certBytes(),
			Docs:       c.docs.summary(),
		})
		s.sentNAT = c.portmap.ourNAT()
	}
}

// resolve looks the rendezvous up on a helper goroutine, retrying while
// the name does not resolve (the network may not be up yet), and posts
// the address to the control goroutine.
func (c *Control) resolve(s *server, hostport string) {
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

func (c *Control) resolved(s *server, addr netip.AddrPort) {
	s.addr = addr
	s.reg.Resolved()
	c.setRelays()
}

// setRelays tells the data path which rendezvous may relay to us: all
// that are resolved (the first relayed packet may overtake the ack).
func (c *Control) setRelays() {
	var relays []netip.AddrPort
	for _, s := range c.servers {
		if s.addr.IsValid() {
			relays = append(relays, s.addr)
		}
	}
	c.data.SetRelays(relays)
}

// rendezvousClient is what members and the documents ask of the
// rendezvous client: messages to the registered rendezvous, stamped,
// and registering anew.
type rendezvousClient interface {
	registeredServers() iter.Seq[*server]
	sendServer(s *server, m wire.Body)
	stamp() uint64
	reregister(now time.Time)
}

// registeredServers are the rendezvous we are registered with now.
func (c *Control) registeredServers() iter.Seq[*server] {
	return func(yield func(*server) bool) {
		for _, s := range c.servers {
			if s.reg.Registered() && !yield(s) {
				return
			}
		}
	}
}

// isServer reports whether addr is one of our rendezvous.
func (c *Control) isServer(addr netip.AddrPort) bool {
	for _, s := range c.servers {
		if s.addr == addr || s.other == addr {
			return true
		}
	}
	return false
}

func (c *Control) handleServer(s *server, h wire.Header, m inbound) {
	body, ok := c.open(m.pkt, h, &s.shared)
	if !ok {
		return
	}
	if !m.came(link.RelayTCP) {
		c.udpHeard = true
	}
	switch b := body.(type) {
	case *wire.RegisterAck, *wire.Intro, *wire.TURNOffer, *wire.Relayed, *wire.LookupMiss, *wire.Refused:
		// What a rendezvous sends a peer: checked against replays below.
	case *wire.Document:
		// A document carries its own proof, the network key's signature,
		// and holdings take each at most once: a replayed or reordered one
		// is harmless, and the replay window would lose it.
		// Sealed by this rendezvous, it neither checks nor moves the window.
		c.docs.fromServer(s, b, m.at)
		return
	default:
		c.Dropped.Add(1)
		return
	}
	t := wire.TimeOf(body)
	if t <= s.lastTime {
		c.Dropped.Add(1) // replayed
		return
	}
	s.lastTime = t
	switch b := body.(type) {
	case *wire.RegisterAck:
		c.registered(s, b, m.at)
	case *wire.TURNOffer:
		c.turn.onOffer(b, m.at)
	case *wire.Relayed:
		c.turn.onRelayed(b, m.at)
	case *wire.LookupMiss:
		c.members.lookupMissed(b, m.at)
	case *wire.Refused:
		c.members.refusedUs(s, b)
	case *wire.Intro:
		p := c.peers[b.Peer]
		if b.Cert != nil {
			p = c.members.intro(b, m.at)
		}
		if p == nil {
			c.Dropped.Add(1)
			return
		}
		p.introduced(s, b, m.at)
	}
}

// handleRelayedProbe takes what a relay frame from p carries instead of
// WireGuard — inner, sealed by p, whose header is h: a probe or a pong
// that came through a rendezvous or a TURN relay. A probe is answered the
// way it came.
func (c *Control) handleRelayedProbe(p *peer, h wire.Header, inner []byte, m inbound) {
	body, ok := c.open(inner, h, &p.shared)
	if !ok {
		return
	}
	switch b := body.(type) {
	case *wire.Ping:
		reply := link.Route{Dst: m.src, Via: m.via}
		switch {
		case m.came(link.RelayTCP):
			reply.Via = nil
			for _, s := range c.servers {
				if s.addr == m.src && s.stream != nil {
					reply.Via = s.stream
				}
			}
			if reply.Via == nil {
				c.Dropped.Add(1)
				return
			}
		case m.came(link.TURN):
		case c.isServer(m.src):
			reply.Via = c.data.Relay()
		default:
			// From the peer's TURN relay, to our shared socket: the
			// answer goes back through our own allocation (turnRelay).
			if reply = p.ep.Route(); !reply.Is(link.TURN) {
				c.Dropped.Add(1)
				return
			}
		}
		p.sendRelayedProbe(reply, &wire.Pong{TxID: b.TxID, Src: m.src})
	case *wire.Pong:
		if !p.probeAnswered(m, b) && !c.turn.answered(b, m.at) {
			c.Dropped.Add(1)
		}
	default:
		c.Dropped.Add(1)
	}
}

func (c *Control) registered(s *server, ack *wire.RegisterAck, now time.Time) {
	moved := s.observed != ack.Observed
	// A NAT discovered after the registration left is told at once.
	first := s.reg.Acked(now, s.sentNAT != c.portmap.ourNAT())
	s.observed, s.relay = ack.Observed, ack.Flags&wire.AckRelay != 0
	c.portmap.setPublic(ack.Observed.Addr(), now)
	c.members.refused = 0 // a Refused follows the ack if the rendezvous still refuses us
	c.docs.serverHolds(s, ack.Docs, now)
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
func (c *Control) serverChanged(s *server, now time.Time, why string) {
	for _, p := range c.peers {
		if p.relayVia == s {
			p.updateRoute(now, why)
		}
	}
}

// reregister registers with every rendezvous now: our endpoint may have
// changed, and the rendezvous relays and introduces by the endpoint it saw
// last.
func (c *Control) reregister(now time.Time) {
	c.reregistered = now
	for _, s := range c.servers {
		s.reg.RegisterNow(now)
	}
}

// relaySilent follows a relayed route that fell silent: the rendezvous
// may not know where we are any more (the NAT remapped us, the host
// moved, or it restarted), so we register again, unless we just did.
func (c *Control) relaySilent(now time.Time) {
	if now.Sub(c.reregistered) > silenceLimit {
		c.reregister(now)
	}
}

// dialTCP connects to s over TCP on a helper goroutine, on its own port,
// then on 443, and posts the outcome to the control goroutine.
func (c *Control) dialTCP(s *server, addr netip.AddrPort) {
	var st *wire.Stream
	for _, port := range []uint16{addr.Port(), tcpFallbackPort} {
		ctx, cancel := context.WithTimeout(c.ctx, tcpDialTimeout)
		conn, err := c.dial(ctx, "tcp", netip.AddrPortFrom(addr.Addr(), port).String())
		cancel()
		if err == nil {
			st = wire.NewStream(conn)
			break
		}
		c.log.Debug("rendezvous over TCP failed", "rendezvous", s.hostport, "port", port, "err", err)
	}
	if !c.post(func() { c.dialed(s, st) }) && st != nil {
		st.Close()
	}
}

// dialed takes the outcome of dialTCP: st, if connected, becomes s's
// stream unless UDP came back meanwhile.
func (c *Control) dialed(s *server, st *wire.Stream) {
	now := c.clock.Now()
	if !slices.Contains(c.servers, s) { // a reload removed it meanwhile
		if st != nil {
			st.Close()
		}
		return
	}
	if !s.reg.Dialed(now, st != nil, c.udpBlocked()) {
		if st != nil {
			st.Close()
		} else {
			c.log.Warn("cannot reach rendezvous over TCP either", "rendezvous", s.hostport, "retry_in", s.reg.NextDial().Sub(now).Round(time.Second))
		}
		return
	}
	c.log.Info("UDP blocked: reaching rendezvous over TCP", "rendezvous", s.hostport, "tcp", st.RemoteAddr())
	ts := transport.NewStream(st, s.addr)
	s.stream = ts
	// The data path reads the stream (relayed WireGuard to WireGuard, the
	// rest to us) until the connection ends.
	c.spawn(func() {
		c.data.Serve(ts, key.Key{})
		ts.Close()
		c.post(func() { c.streamClosed(s, ts) })
	})
}

func (c *Control) streamClosed(s *server, st *transport.Stream) {
	if s.stream != st {
		return
	}
	s.stream = nil
	c.log.Warn("TCP connection to rendezvous closed", "rendezvous", s.hostport)
	now := c.clock.Now()
	if s.reg.StreamClosed(now) {
		c.serverChanged(s, now, "TCP connection to the rendezvous closed")
	}
}

// LookupName returns the addresses of the member named name, asking the
// rendezvous if it is not known yet, within timeout; nil if no member of
// the network has that name. It may be called from any goroutine (the
// DNS server's).
func (c *Control) LookupName(name string, timeout time.Duration) []netip.Addr {
	var (
		addrs []netip.Addr
		wait  chan []netip.Addr
	)
	if !c.call(func() { addrs, wait = c.members.lookupName(name, c.clock.Now()) }) || wait == nil {
		return addrs
	}
	select {
	case addrs = <-wait:
		return addrs
	case <-time.After(timeout):
		return nil
	case <-c.done:
		return nil
	}
}

// updateRegistrations sends every rendezvous our registration anew at its
// next tick (what it carries changed: our candidates or NAT).
func (c *Control) updateRegistrations(now time.Time) {
	for _, s := range c.servers {
		s.reg.Update(now)
	}
}
