package control

import (
	"bytes"
	"net/netip"
	"slices"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// What the control plane does when things change under it: a reloaded
// config (rendezvous and peers come and go, and members come and go
// with them: newPeer, dropPeer), a change of the host's network, after
// which our endpoint, our NAT and every direct path are learned afresh,
// and a resume from a freeze or sleep (checkResume), which is treated
// as one.

// netSettleTime lets a burst of address and route changes (an interface
// going, another coming with its address and default route) end before
// acting on it, so that registrations leave by the new route.
const netSettleTime = 100 * time.Millisecond

// addServer adds a rendezvous to ask and register with.
func (c *Control) addServer(sc ServerConfig) *server {
	s := &server{hostport: sc.HostPort, pub: sc.Key, shared: wire.NewSharedKey(c.priv, sc.Key)}
	c.servers = append(c.servers, s)
	return s
}

// addPeer adds a peer to find through the rendezvous; it is asked for at
// the next registration (wants).
func (c *Control) addPeer(pc PeerConfig) *peer {
	p := c.newPeer(pc)
	c.wants = append(c.wants, pc.Key)
	return p
}

// newPeer adds a peer that the rendezvous introduces: one of the config's
// (addPeer) or a member of the network (members).
func (c *Control) newPeer(pc PeerConfig) *peer {
	p := &peer{deps: &c.peerDeps, name: pc.Name, key: pc.Key, shared: wire.NewSharedKey(c.priv, pc.Key), backoff: minBackoff,
		birthday: peerBirthday{backoff: minBirthdayBackoff}, path: nat.PathNone.String(), observed: map[*server]netip.AddrPort{}}
	p.punch = nat.NewPunch(link.Leads(c.pub, pc.Key), func(dst netip.AddrPort, pm nat.Probe) {
		m := probeMessage(pm)
		if conn := p.socketTo(dst); conn != nil {
			p.sendVia(conn, dst, m)
			return
		}
		c.sendSealed(dst, &p.shared, m)
	})
	if c.data != nil {
		p.ep = c.data.Peer(pc.Key)
	}
	c.peers[pc.Key] = p
	return p
}

// dropPeer lets p go: its birthday sockets closed, and out of the data
// path, the control plane and TURN's list (what it sends through a TURN
// relay is dropped too).
func (c *Control) dropPeer(p *peer) {
	p.closeBirthday(true)
	c.data.RemovePeer(p.key)
	delete(c.peers, p.key)
	c.turn.setPeers()
}

// Reconfigure applies a reloaded config on the control goroutine and
// waits for it; false if the control plane stopped first. Peers and
// rendezvous that stay keep everything — paths, registrations, punching
// rounds; removed ones are let go (deregistered, birthday sockets
// closed); new ones start as at up. When the peers we want change, every
// rendezvous hears it at once, and introduces new pairs then. New peers
// have their data path endpoint when it returns.
func (c *Control) Reconfigure(cfg Config) bool {
	return c.call(func() { c.reconfigure(cfg, c.clock.Now()) })
}

func (c *Control) reconfigure(cfg Config, now time.Time) {
	c.own, c.peerDeps.ifaceMTU = cfg.Addresses, cfg.MTU
	c.members.configure(cfg, now)
	c.docs.configure(cfg, now)

	keep := make(map[ServerConfig]bool, len(cfg.Servers))
	for _, sc := range cfg.Servers {
		keep[sc] = true
	}
	var servers []*server
	for _, s := range c.servers {
		sc := ServerConfig{HostPort: s.hostport, Key: s.pub}
		if keep[sc] {
			servers = append(servers, s)
			delete(keep, sc)
			continue
		}
		c.log.Info("rendezvous removed by reload", "rendezvous", s.hostport)
		c.dropServer(s, now)
	}
	c.servers = servers
	for _, sc := range cfg.Servers {
		if keep[sc] {
			c.log.Info("rendezvous added by reload", "rendezvous", sc.HostPort)
			c.addServer(sc)
		}
	}
	c.setRelays()

	wanted := make(map[key.Key]PeerConfig, len(cfg.Peers))
	for _, pc := range cfg.Peers {
		wanted[pc.Key] = pc
	}
	before := slices.Clone(c.wants)
	c.wants = c.wants[:0]
	for k, p := range c.peers {
		if p.member != nil {
			continue // the network's, not the config's
		}
		pc, ok := wanted[k]
		if !ok {
			c.log.Info("peer removed by reload", "peer", p.label())
			c.dropPeer(p)
			continue
		}
		p.name = pc.Name
		c.wants = append(c.wants, k)
		delete(wanted, k)
	}
	for _, pc := range cfg.Peers {
		if _, isNew := wanted[pc.Key]; isNew {
			p := c.addPeer(pc)
			c.log.Info("peer added by reload", "peer", p.label())
		}
	}
	slices.SortFunc(before, compareKeys)
	slices.SortFunc(c.wants, compareKeys)
	if !slices.Equal(before, c.wants) {
		c.reregister(now)
	}
}

func compareKeys(a, b key.Key) int { return bytes.Compare(a[:], b[:]) }

// dropServer lets a rendezvous go: deregistered, its TCP stream closed,
// and the peers relayed through it routed anew.
func (c *Control) dropServer(s *server, now time.Time) {
	if s.reg.Registered() {
		c.sendServer(s, &wire.Deregister{Time: c.stamp()})
	}
	if s.stream != nil {
		s.stream.Close()
		s.stream = nil
	}
	for tx, probe := range c.stun {
		if probe.server == s {
			delete(c.stun, tx)
		}
	}
	for _, p := range c.peers {
		delete(p.observed, s)
		if p.relayVia == s {
			p.relayVia = nil
			p.updateRoute(now, "its rendezvous was removed by a reload")
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
	c.portmap.networkChanged()
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
		if r := p.ep.Route(); r.Dst.IsValid() && !r.Relayed() {
			p.punch.Suspect(now)
		}
		p.punch.ResetHeartbeat() // other NATs now
	}
}

// checkResume notices a freeze or sleep (frozeFor) and treats it like a
// new network.
func (c *Control) checkResume(now time.Time) {
	last := c.lastTick
	c.lastTick = now
	// Resumed before Alive: the data path drops initiations while the
	// ticks have stopped and a moment after Resumed. Alive first would
	// let the backlog's initiations, made long before the freeze, through
	// in between, and answering one replaces the handshake we start.
	if gap, frozen := frozeFor(last, now); frozen {
		c.resumed(now, gap)
	}
	c.data.Alive(now)
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
	if c.resumedBriefly(now, gap) {
		return // the NATs' mappings likely outlived it
	}
	c.log.Info("resumed after a freeze or sleep: treating it as a network change", "gap", gap.Round(time.Millisecond))
	c.data.Resumed(now)
	c.networkChanged(now)
	for _, p := range c.peers {
		p.resumeAfresh(now)
	}
}

// resumedBriefly handles a resume after a short freeze of gap, which
// ended at now: if every direct path was heard within its heartbeat
// interval, freeze included, they are kept and probed. It reports
// whether it did; otherwise resumed treats the wake-up as a new network.
func (c *Control) resumedBriefly(now time.Time, gap time.Duration) bool {
	before := now.Add(-gap) // the last tick before the freeze
	direct := 0
	for _, p := range c.peers {
		if !p.punch.Path().Addr.IsValid() {
			continue
		}
		// Heard: a probe, or any WireGuard packet, which keeps the NATs'
		// mappings as well. After before: the backlog, read on waking.
		idle := gap
		if heard := latest(p.punch.LastHeard(), p.ep.Activity().Received); heard.Before(before) {
			idle += before.Sub(heard)
		}
		if idle >= p.punch.Heartbeat() {
			return false
		}
		direct++
	}
	if direct == 0 {
		return false
	}
	c.log.Info("resumed after a short freeze: probing the direct paths", "gap", gap.Round(time.Millisecond), "direct_paths", direct)
	c.data.Resumed(now)
	c.reregister(now)
	for _, p := range c.peers {
		if p.punch.Path().Addr.IsValid() {
			p.punch.Suspect(now)
			c.wg.Rehandshake(p.key)
		} else {
			p.resumeAfresh(now)
		}
	}
	return true
}
