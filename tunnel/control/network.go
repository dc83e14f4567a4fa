package control

import (
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/nat"
)

// The network as seen from here: our public endpoint and our NAT's
// mapping, learned with STUN on the shared socket; whether UDP is blocked
// (no rendezvous answered at all, so TCP it is); changes of the host's
// network, after which all of that is learned afresh; and the path MTUs
// the kernel knows for the routes in use.

// stunProbe is a STUN request in flight.
type stunProbe struct {
	server *server
	dst    netip.AddrPort
	sent   time.Time
}

// stunLifetime is how long a STUN request waits for its answer; then it
// is forgotten, so that a silent rendezvous does not grow the table.
const stunLifetime = 10 * time.Second

// netSettleTime lets a burst of address and route changes (an interface
// going, another coming with its address and default route) end before
// acting on it, so that registrations leave by the new route.
const netSettleTime = 100 * time.Millisecond

// udpBlocked reports whether UDP was taken for blocked on this network.
func (c *Control) udpBlocked() bool { return c.mapping == nat.MappingBlocked }

func (c *Control) sendSTUN(s *server, dst netip.AddrPort, now time.Time) {
	tx, req := nat.NewBindingRequest()
	for tx, p := range c.stun {
		if now.Sub(p.sent) > stunLifetime {
			delete(c.stun, tx)
		}
	}
	c.stun[tx] = stunProbe{server: s, dst: dst, sent: now}
	if c.stunSent.IsZero() {
		c.stunSent = now
	}
	c.data.SendTo(req, dst)
}

// checkBlocked takes UDP for blocked when no rendezvous has answered
// anything for a while.
func (c *Control) checkBlocked(now time.Time) {
	if c.mapping != nat.MappingUnknown || c.udpHeard || c.stunSent.IsZero() || now.Sub(c.stunSent) < udpGiveUp {
		return
	}
	c.setMapping(nat.MappingBlocked, now)
	c.blockedAt, c.nextUDPProbe = now, now.Add(udpProbeEvery)
}

// probeUDP asks STUN over UDP every udpProbeEvery for udpProbeFor after
// UDP was taken for blocked: a network that lost our first requests, not
// one that blocks UDP, is back on UDP within a second (udpBack). Later the
// registrations over TCP ask, at every refresh.
func (c *Control) probeUDP(now time.Time) {
	if !c.udpBlocked() || now.Sub(c.blockedAt) >= udpProbeFor || now.Before(c.nextUDPProbe) {
		return
	}
	c.nextUDPProbe = now.Add(udpProbeEvery)
	for _, s := range c.servers {
		if s.addr.IsValid() {
			c.sendSTUN(s, s.addr, now)
		}
	}
}

func (c *Control) setMapping(m nat.Mapping, now time.Time) {
	if m == c.mapping {
		return
	}
	c.mapping = m
	c.log.Info("NAT discovered", "mapping", m)
	c.portmap.update(now) // none is offered where UDP is blocked
	// Tell the rendezvous now, so that peers learn it in their intros; a
	// registration in flight is followed up when its ack comes.
	for _, s := range c.servers {
		s.reg.Update(now)
	}
}

func (c *Control) handleSTUN(m inbound) {
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

// udpBack follows the first STUN answer after UDP was taken for blocked:
// the network lets UDP out again, so punching and the UDP relay are back,
// and the TCP connections go.
func (c *Control) udpBack(now time.Time) {
	c.log.Info("UDP works again: leaving TCP")
	c.setMapping(nat.MappingUnknown, now)
	for _, s := range c.servers {
		// While UDP was blocked, registering over it waited a refresh
		// interval; now it is the way in again, so register at once.
		s.reg.RegisterNow(now)
		if s.stream != nil {
			s.stream.Close() // readStream unregisters s
		}
	}
}

// networkChanged follows a change of the host's addresses or routes: our
// public endpoint, our NAT and our local candidates may all be new. It
// registers again with every rendezvous at once (which introduces us anew
// to every peer that wants us), asks STUN afresh, and probes every direct
// path, which a move breaks without a sound: the other side would only
// notice its silence seconds later.
func (c *Control) networkChanged(now time.Time) {
	c.log.Info("network changed: registering again and checking paths")
	c.reregister(now)
	// The new network may block UDP, or let it through again: whether it
	// does is found out as at start (checkBlocked, udpBack). Until STUN
	// answers, our NAT is unknown.
	if !c.udpBlocked() {
		c.mapping = nat.MappingUnknown
	}
	c.udpHeard, c.udpSince, c.stunSent = false, now, time.Time{}
	c.portmap.networkChanged(now)
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

// resumeGap: a tick this much later than its 50 ms — or a wall clock
// that moved this much further than the monotonic one, which stops while
// the machine sleeps — means the process was frozen (SIGSTOP, a paused VM
// or container) or the machine slept.
const resumeGap = 2 * time.Second

// checkResume notices a freeze or sleep and treats it like a new network.
func (c *Control) checkResume(now time.Time) {
	last := c.lastTick
	c.lastTick = now
	c.data.Alive(now)
	if last.IsZero() {
		return
	}
	mono := now.Sub(last)
	wall := now.Round(0).Sub(last.Round(0)) // Round(0) drops the monotonic reading
	if mono < resumeGap && wall-mono < resumeGap {
		return
	}
	c.resumed(now, max(mono, wall))
}

// resumed follows a freeze or sleep of about gap: every NAT mapping and
// session the peers had with us may be gone, and what arrived meanwhile
// was sent long ago. Stale handshake messages are forgotten and stale
// initiations dropped (the data path's Resumed), the direct paths left for
// the relay, registrations and STUN sent at once (networkChanged), and a
// new handshake started with every peer — rather than answer a peer's
// initiation from before the freeze, whose answer no longer matches
// anything it has.
func (c *Control) resumed(now time.Time, gap time.Duration) {
	c.log.Info("resumed after a freeze or sleep: treating it as a network change", "gap", gap.Round(time.Millisecond))
	c.data.Resumed(now)
	c.networkChanged(now)
	for _, p := range c.peers {
		direct := p.punch.Path().Addr.IsValid()
		p.punch.Forget()
		p.closeBirthday(true)
		p.nextQuery, p.backoff = now, minBackoff
		p.nextBirthday, p.birthdayBackoff = time.Time{}, minBirthdayBackoff
		if direct {
			p.updateRoute(now, "resumed after a freeze or sleep: the NATs' mappings are likely gone")
		}
		c.wg.Rehandshake(p.key)
	}
}

// queuePathCheck asks the control goroutine to look up the path MTU to
// dst (pathmtu.go). It never blocks: a full queue means checks are
// pending anyway.
func (c *Control) queuePathCheck(dst netip.AddrPort) {
	select {
	case c.pathChecks <- dst:
	default:
	}
}

// checkPathMTU looks up the path MTU to dst and fits the routes of the
// peers that use that path to it, on the control goroutine: netlink
// answers at once, and no lock is held.
func (c *Control) checkPathMTU(dst netip.AddrPort) {
	mtu := c.host.PathMTU(dst.Addr(), c.mark)
	for _, p := range c.peers {
		if r := p.ep.Route(); r.Dst == dst {
			p.fitPathMTU(mtu, r)
		}
	}
}
