package control

import (
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Our public endpoint and our NAT's mapping, learned with STUN on the
// shared socket from each rendezvous's two addresses, and whether UDP is
// blocked on this network (no rendezvous answered at all, so TCP it is).
// After a change of the host's network all of it is learned afresh.

const (
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
)

// stunProbe is a STUN request in flight.
type stunProbe struct {
	server *server
	dst    netip.AddrPort
	sent   time.Time
}

// stunLifetime is how long a STUN request waits for its answer; then it
// is forgotten, so that a silent rendezvous does not grow the table.
const stunLifetime = 10 * time.Second

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
	c.data.Shared().Send([][]byte{req}, key.Key{}, dst)
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
	c.updateRegistrations(now)
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
			s.stream.Close() // its reader unregisters s
		}
	}
}

// stunMapping is our NAT as STUN found it.
func (c *Control) stunMapping() nat.Mapping { return c.mapping }
