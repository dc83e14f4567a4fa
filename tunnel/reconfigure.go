package tunnel

import (
	"bytes"
	"net/netip"
	"slices"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// controlConfig is what a reload may change of the control plane.
type controlConfig struct {
	servers []ServerConfig
	peers   []PeerConfig
	own     []netip.Prefix
	mtu     int
}

// reconfigure applies a reloaded config on the control goroutine (call
// it through call). Peers and rendezvous that stay keep everything —
// paths, registrations, punching rounds; removed ones are let go
// (deregistered, birthday sockets closed); new ones start as at up. When
// the peers we want change, every rendezvous hears it at once, and
// introduces new pairs then.
func (c *control) reconfigure(cfg controlConfig, now time.Time) {
	c.own, c.ifaceMTU = cfg.own, cfg.mtu

	keep := make(map[ServerConfig]bool, len(cfg.servers))
	for _, sc := range cfg.servers {
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
	for _, sc := range cfg.servers {
		if keep[sc] {
			c.log.Info("rendezvous added by reload", "rendezvous", sc.HostPort)
			c.addServer(sc)
		}
	}
	c.setRelays()

	wanted := make(map[key.Key]PeerConfig, len(cfg.peers))
	for _, pc := range cfg.peers {
		wanted[pc.Key] = pc
	}
	before := slices.Clone(c.wants)
	c.wants = c.wants[:0]
	for k, p := range c.peers {
		pc, ok := wanted[k]
		if !ok {
			c.log.Info("peer removed by reload", "peer", p.label())
			c.closeBirthday(p, true)
			c.bind.RemovePeer(k)
			delete(c.peers, k)
			c.setTURNPeers() // what it sends through a TURN relay is dropped too
			continue
		}
		p.name = pc.Name
		c.wants = append(c.wants, k)
		delete(wanted, k)
	}
	for _, pc := range cfg.peers {
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
func (c *control) dropServer(s *server, now time.Time) {
	if s.reg.Registered() {
		c.sendServer(s, &wire.Deregister{Time: c.now()})
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
			c.updateRoute(p, now, "its rendezvous was removed by a reload")
		}
	}
}

// setRelays tells the Bind which rendezvous may relay to us: all that
// are resolved (the first relayed packet may overtake the ack).
func (c *control) setRelays() {
	var relays []netip.AddrPort
	for _, s := range c.servers {
		if s.addr.IsValid() {
			relays = append(relays, s.addr)
		}
	}
	c.bind.SetRelays(relays)
}
