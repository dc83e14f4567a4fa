package control

import (
	"net/netip"
	"slices"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/transport"
)

// Peers and their paths: introductions and asking the rendezvous for
// them, the probes between peers, the route each peer is on and why,
// noticing a path that went silent, and remembering confirmed endpoints.

// PathChange is one entry of a peer's path history.
type PathChange struct {
	Time time.Time `json:"time"`
	From string    `json:"from"`
	To   string    `json:"to"`
	Why  string    `json:"why"`
}

// probeMessage is the message that carries a Punch's probe or answer.
func probeMessage(m nat.Probe) wire.Body {
	if m.Answer {
		return &wire.Pong{TxID: m.TxID, Src: m.Src}
	}
	return &wire.Ping{TxID: m.TxID}
}

// tick does what is due for p at now: its birthday round, the checks of a
// silent path and of its MTU, a handshake WireGuard may still owe, the
// punching round, and asking the rendezvous while there is no path.
func (p *peer) tick(now time.Time) {
	d := p.deps
	p.tickBirthday(now)
	p.checkSilence(now)
	p.tickPathMTU(now)
	if !p.handshakeCheck.IsZero() && !now.Before(p.handshakeCheck) {
		p.handshakeCheck = time.Time{}
		d.wg.HandshakeIfNone(p.key)
	}
	hb := p.punch.HeartbeatState()
	a := p.ep.Activity()
	p.punch.SawTraffic(a.Received, a.Any)
	ev := p.punch.Tick(now)
	p.noteHeartbeat(hb)
	if ev == nat.EventLost {
		d.log.Warn("direct path lost", "peer", p.label(), "endpoint", directAddr(p.ep.Route()))
		p.lingerBirthday(now) // for a peer that was only frozen
		d.host.reregister(now)
		p.nextQuery, p.backoff = now, minBackoff
		p.updateRoute(now, "no answer on the direct path")
	}
	// A round probing a remembered endpoint does not hold up asking a
	// rendezvous that has just come up.
	if !p.punch.Path().Addr.IsValid() && (!p.punch.Punching(now) || p.fromMemory) && !now.Before(p.nextQuery) {
		p.query(now)
	}
}

// introduced takes the rendezvous s's introduction of p: where it sees
// the peer, its candidates and its NAT. It punches (and relays through s
// meanwhile).
func (p *peer) introduced(s *server, b *wire.Intro, now time.Time) {
	d := p.deps
	p.nat = nat.Mapping(b.NAT)
	if s.relay {
		p.relayVia = s
	}
	if last, ok := p.observed[s]; ok && last != b.Observed {
		// The peer is back from a new public endpoint: it restarted
		// (behind a hard NAT, always on a new port), moved, or its NAT
		// forgot it. Our direct path leads to the old one: leave it
		// now, not after SuspectTimeout, and punch as for a new peer.
		d.log.Info("peer has a new public endpoint: punching anew", "peer", p.label(), "was", last, "now", b.Observed)
		if p.punch.Path().Addr.IsValid() {
			p.punch.Drop()
			p.closeBirthday(true)
		}
		p.birthday.next, p.birthday.backoff = time.Time{}, minBirthdayBackoff
	}
	p.observed[s] = b.Observed
	p.turn.sent = netip.AddrPort{} // it may have restarted: tell it our relayed address again
	// The peer asks for an intro when it has no path: if ours still
	// looks fine, it may be dead one way (it hears nothing from us), or
	// lead to a birthday socket of a process that has since restarted.
	// A live path answers within a round trip, so it is not given 2 s.
	p.punch.SuspectNow(now)
	if p.punch.StartIfNew(now, append([]netip.AddrPort{b.Observed}, b.Candidates...), p.punchDuration()) {
		d.log.Info("punching", "peer", p.label(), "peer_nat", p.nat, "candidates", p.punch.Candidates())
	} else {
		d.log.Debug("introduced again with the candidates that just failed", "peer", p.label(), "retry_at", p.punch.RetryAt())
	}
	// Relay while punching, so the first packet does not wait — and set
	// before the birthday sockets open, which takes tens of milliseconds
	// in which an answer to the peer's first packet would find no route.
	p.updateRoute(now, "introduced by the rendezvous")
	p.maybeBirthday(b.Observed, now)
	p.punch.Tick(now) // probe now, not at the next tick
	p.updateRoute(now, "introduced by the rendezvous")
}

// query asks every registered rendezvous for an introduction to p, backing
// off while no direct path comes of it.
func (p *peer) query(now time.Time) {
	d := p.deps
	asked := false
	for s := range d.host.registeredServers() {
		d.host.sendServer(s, &wire.Query{Time: d.host.stamp(), Peer: p.key})
		asked = true
	}
	if !asked {
		// No rendezvous to ask: try where the peer was last seen.
		ep, ok := d.saved.endpoint(p.key, now)
		if !ok {
			return
		}
		d.log.Info("no rendezvous: probing the peer's last known endpoint", "peer", p.label(), "endpoint", ep)
		p.punch.Start(now, []netip.AddrPort{ep}, nat.ShortPunchDuration)
		p.punch.Tick(now)
	}
	p.fromMemory = !asked
	limit := maxPunchBackoff
	if d.mapper.ourNAT() == nat.MappingHard && p.nat == nat.MappingHard {
		limit = hardBackoff
	}
	p.nextQuery = now.Add(p.backoff)
	p.backoff = min(2*p.backoff, limit)
}

// handle takes a message the peer sealed: a probe or its answer.
func (p *peer) handle(h wire.Header, m inbound) {
	d := p.deps
	body, ok := d.host.open(m.pkt, h, &p.shared)
	if !ok {
		return
	}
	// The peer proved itself from m.src: its WireGuard packets from there
	// belong to its endpoint.
	p.ep.Learn(m.src)
	sock, _ := m.via.(*transport.Socket)
	if sock != nil {
		p.birthdayWon(sock, m.src, m.at)
		if p.socketTo(m.src) != sock {
			d.dropped.Add(1) // a losing socket's late packet
			return
		}
	}
	defer p.noteHeartbeat(p.punch.HeartbeatState())
	switch b := body.(type) {
	case *wire.Ping:
		if path := p.punch.Path().Addr; path.IsValid() && m.src != path && nat.KindOf(m.src) == nat.KindOf(path) {
			// The peer probes from somewhere new: it moved, or its NAT
			// remapped it. Our path to its old address is likely dead.
			p.punch.Suspect(m.at)
		}
		// Handshakes count: one sent after an idle spell, unanswered
		// yet, has the leader probe the path (checkSilence) at once.
		a := p.ep.Activity()
		p.punch.SawData(latest(a.Sent, a.Data))
		p.punch.OnPing(m.at, m.src, b.TxID)
		if sock != nil && p.punch.Path().Addr != m.src {
			// Confirm the winning socket from this side too.
			p.punch.Probe(m.at, m.src)
		}
	case *wire.Pong:
		if p.probeAnswered(m, b) {
			return // answers punchtun ping
		}
		if p.punch.OnPong(m.at, m.src, b.TxID) == nat.EventChosen {
			path := p.punch.Path()
			d.log.Info("direct path confirmed", "peer", p.label(), "path", path.Kind, "endpoint", path.Addr,
				"took", path.Took.Round(time.Millisecond), "rtt", path.RTT, "candidates", len(p.punch.Candidates()))
			p.backoff = minBackoff
			p.remember(path.Addr, m.at)
			if p.socketTo(path.Addr) == nil {
				p.closeBirthday(true) // the shared socket got through
			}
			p.updateRoute(m.at, "direct path confirmed by probes")
		}
	default:
		d.dropped.Add(1)
	}
}

// noteHeartbeat logs what the last step did to p's heartbeat, which was
// before: sent, retried, answered, the interval changed.
func (p *peer) noteHeartbeat(before nat.HeartbeatState) {
	hb := p.punch.HeartbeatState()
	if hb == before {
		return
	}
	p.deps.log.Debug("heartbeat", "peer", p.label(), "interval", hb.Interval, "out", hb.Out, "retried", hb.Retried, "misses", hb.Misses)
}

// updateRoute puts p on the best route there is: a confirmed direct path,
// else our TURN relay, else the relay of the rendezvous that introduced
// it, else none. A change is logged once, with why, and kept in the
// history.
func (p *peer) updateRoute(now time.Time, why string) {
	d := p.deps
	var r link.Route
	if path := p.punch.Path(); path.Addr.IsValid() {
		r = link.Route{Dst: path.Addr, Via: p.directVia(path.Addr)}
	} else if tr, ok := d.turn.route(p); ok {
		r = tr
	} else if s := p.relayVia; s != nil && s.reg.Registered() && s.relay {
		r = link.Route{Dst: s.addr, Via: d.data.Relay()}
		if s.stream != nil {
			r.Via = s.stream
		}
	}
	if p.ep.Route() == r {
		return
	}
	p.ep.SetRoute(r)
	if r.Dst.IsValid() {
		d.host.queuePathCheck(r.Dst)
	}
	if r.Dst.IsValid() && d.wg != nil {
		if err := d.wg.Repoint(p.key); err != nil {
			d.log.Warn("cannot point WireGuard at the peer's new route", "peer", p.label(), "route", r.Kind(), "err", err)
		}
		// Leave a moment for the handshake traffic brings anyway: two
		// handshakes started at once by both sides can cross and stall.
		p.handshakeCheck = now.Add(handshakeCheckDelay)
	}
	dst, name := r.Dst, r.Kind()
	if r.Relayed() {
		why += "; relayed because " + p.relayReason(now)
	}
	d.log.Info("path changed", "peer", p.label(), "from", p.path, "to", name, "endpoint", dst, "why", why)
	// Never appended in place: published views share the slice.
	p.history = append(slices.Clip(p.history), PathChange{Time: now, From: p.path, To: name, Why: why})
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
func (p *peer) checkSilence(now time.Time) {
	d := p.deps
	r := p.ep.Route()
	if !r.Dst.IsValid() {
		return
	}
	a := p.ep.Activity()
	sent, heard := a.Sent, a.Received
	if probed := p.punch.LastHeard(); probed.After(heard) {
		heard = probed
	}
	inUse := now.Sub(a.Use) < activeWindow
	if sent.Sub(heard) <= silenceLimit && !(inUse && now.Sub(heard) > silenceLimit) {
		return
	}
	switch {
	case !r.Relayed():
		p.punch.Suspect(now)
	case r.Is(link.TURN):
		d.turn.check(p, r, now)
	default:
		d.host.relaySilent(now)
	}
}

// hasNoDirectPath follows a handshake of the peer's that came through the
// relay while our route to it is direct: it has no direct path to us (it
// restarted, or its NAT forgot it), so ours likely leads nowhere. Leave it
// now for the relay, and ask the rendezvous to introduce us again, so that
// both sides punch afresh.
func (p *peer) hasNoDirectPath(now time.Time) {
	d := p.deps
	if p.ep.Route().Relayed() || !p.punch.Path().Addr.IsValid() || (p.relayVia == nil && !d.turn.active()) {
		return
	}
	d.log.Info("the peer's handshake came through the relay: leaving the direct path", "peer", p.label(), "endpoint", p.punch.Path().Addr)
	p.punch.Drop()
	p.closeBirthday(true)
	p.birthday.next, p.birthday.backoff = time.Time{}, minBirthdayBackoff
	p.nextQuery, p.backoff = now, minBackoff
	p.updateRoute(now, "the peer's handshake came through the relay")
}

// remember keeps p's confirmed endpoint, and our port, for the next run.
func (p *peer) remember(ep netip.AddrPort, now time.Time) {
	d := p.deps
	if d.statePath == "" {
		return
	}
	if d.saved.Peers == nil {
		d.saved.Peers = map[string]savedPeer{}
	}
	d.saved.ListenPort = d.data.Port()
	d.saved.Peers[p.key.String()] = savedPeer{Endpoint: ep, Confirmed: now}
	if err := d.saved.save(d.statePath); err != nil {
		d.log.Warn("cannot save state", "file", d.statePath, "err", err)
	}
}

// punchDuration is how long to punch p: briefly when the NATs rule out a
// direct path through them, since only a shared LAN can still give one.
func (p *peer) punchDuration() time.Duration {
	d := p.deps
	if d.host.udpBlocked() || p.nat == nat.MappingBlocked ||
		d.mapper.ourNAT() == nat.MappingHard && p.nat == nat.MappingHard {
		return nat.ShortPunchDuration
	}
	return nat.PunchDuration
}

// relayReason says in plain words why p is relayed.
func (p *peer) relayReason(now time.Time) string {
	d := p.deps
	// What rules a direct path out comes first: a round still punching
	// then only looks for a shared LAN.
	switch {
	case d.host.udpBlocked():
		return "UDP blocked on this network"
	case p.nat == nat.MappingBlocked:
		return "UDP blocked on the peer's network"
	case d.mapper.ourNAT() == nat.MappingHard && p.nat == nat.MappingHard:
		return "both NATs map per destination"
	case p.punch.Punching(now):
		return "punching in progress"
	case p.sharesPublicIP():
		return "the peer is behind our own public address, but no LAN path answered and the NAT does not loop packets back to itself (no hairpinning)"
	}
	return "no reply from the peer's candidates"
}

// sharesPublicIP reports whether p was introduced at our own public
// address: two hosts behind one NAT (a carrier's, say) on different LANs.
func (p *peer) sharesPublicIP() bool {
	for s, ep := range p.observed {
		if s.observed.IsValid() && s.observed.Addr() == ep.Addr() {
			return true
		}
	}
	return false
}

// relayName names the relay r goes through, for status's via.
func (p *peer) relayName(r link.Route) string {
	if t, ok := r.Via.(*transport.TURN); ok {
		return t.URI()
	}
	if p.relayVia != nil {
		return p.relayVia.hostport
	}
	return r.Dst.String()
}

// needsRelay reports whether p, introduced, has no direct path.
func (p *peer) needsRelay() bool { return len(p.observed) > 0 && !p.punch.Path().Addr.IsValid() }

// directAddr is the direct path r uses, if any, for logs.
func directAddr(r link.Route) netip.AddrPort {
	if !r.Relayed() {
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
