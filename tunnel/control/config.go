package control

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/nat/portmap"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/policy"
)

// Config is what the control plane takes of a tunnel's config; a reload
// may change all but PrivateKey and Interface (Reconfigure).
type Config struct {
	PrivateKey key.Private
	Interface  string         // the tunnel's interface: never a candidate
	Addresses  []netip.Prefix // the tunnel's addresses: never candidates
	MTU        int            // the interface's
	Servers    []ServerConfig
	Peers      []PeerConfig // the peers it finds (those without a fixed Endpoint)
	// The network this interface is a member of, with its certificate
	// (members.go); zero and nil for none. Static are every static peer's
	// AllowedIPs, which no member may hold.
	Network cert.NetworkKey
	Cert    *cert.Cert
	Static  []netip.Prefix
	// Documents are the network's policy or revocations the config names
	// (Policy =), verified (documents.go).
	Documents []*cert.Document
	// PortMapping is which protocols ask the router for a port forward
	// (portmap.go); set at start, not by a reload.
	PortMapping portmap.Mode
}

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

// Filter is the network policy's filter, for the data path to wrap the
// TUN with; the control plane keeps it up to date.
func (c *Control) Filter() *policy.Filter { return c.docs.filter }

// Publish hands the interface a signed policy or revocation, as `punchtun
// network publish` does: verified, applied, kept and sent on; the error
// says why not.
func (c *Control) Publish(doc []byte) error {
	var err error
	if !c.call(func() { err = c.docs.publish(doc, time.Now()) }) {
		return errors.New("the interface is stopping")
	}
	return err
}

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
// (addPeer) or a member of the network (members.go).
func (c *Control) newPeer(pc PeerConfig) *peer {
	p := &peer{c: c, name: pc.Name, key: pc.Key, shared: wire.NewSharedKey(c.priv, pc.Key), backoff: minBackoff,
		birthdayBackoff: minBirthdayBackoff, path: nat.PathNone.String(), observed: map[*server]netip.AddrPort{}}
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

// Reconfigure applies a reloaded config on the control goroutine and
// waits for it; false if the control plane stopped first. Peers and
// rendezvous that stay keep everything — paths, registrations, punching
// rounds; removed ones are let go (deregistered, birthday sockets
// closed); new ones start as at up. When the peers we want change, every
// rendezvous hears it at once, and introduces new pairs then. New peers
// have their data path endpoint when it returns.
func (c *Control) Reconfigure(cfg Config) bool {
	return c.call(func() { c.reconfigure(cfg, time.Now()) })
}

func (c *Control) reconfigure(cfg Config, now time.Time) {
	c.own, c.ifaceMTU = cfg.Addresses, cfg.MTU
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
			p.closeBirthday(true)
			c.data.RemovePeer(k)
			delete(c.peers, k)
			c.turn.setPeers() // what it sends through a TURN relay is dropped too
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
			p.updateRoute(now, "its rendezvous was removed by a reload")
		}
	}
}
