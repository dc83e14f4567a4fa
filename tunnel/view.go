package tunnel

import (
	"cmp"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// controlView is what the control plane shows of itself. The control
// goroutine publishes a new one after every event it handles (publish);
// status, metrics and ping read the latest without waiting for it, and a
// view, once published, is never changed.
type controlView struct {
	nat     nat.Mapping
	servers []serverView
	peers   map[key.Key]peerView
	turn    *TURNStatus
}

type serverView struct {
	hostport   string
	registered bool
	observed   netip.AddrPort
}

type peerView struct {
	path    string
	nat     nat.Mapping
	history []PathChange // shared with the peer: appends copy (addHistory)
	probing bool
	route   netip.AddrPort
	relay   bool
	reason  string // why relayed
	via     string // the relay: a rendezvous's address or a TURN server's URI
	pathMTU int
	mtu     int // what the tunnel carries whole to the peer, once pathMTU is known
	// On a direct path: its round trip and the heartbeat that keeps it.
	rtt       time.Duration
	heartbeat time.Duration
}

// publish makes the control plane's state at now the view status reads.
func (c *control) publish(now time.Time) {
	v := &controlView{nat: c.mapping, servers: make([]serverView, 0, len(c.servers)), peers: make(map[key.Key]peerView, len(c.peers))}
	for _, s := range c.servers {
		v.servers = append(v.servers, serverView{hostport: s.hostport, registered: s.reg.Registered(), observed: s.observed})
	}
	for k, p := range c.peers {
		r := p.ep.Route()
		pv := peerView{path: p.path, nat: p.nat, history: p.history, probing: p.punch.Punching(now), route: r.Dst, relay: r.Relay}
		if p.pathMTU > 0 {
			pv.pathMTU, pv.mtu = p.pathMTU, cmp.Or(p.routeMTU, c.ifaceMTU)
		}
		if r.Relay {
			pv.reason, pv.via = c.relayReason(p, now), c.relayName(p, r)
		} else if path := p.punch.Path(); path.Addr.IsValid() {
			pv.rtt, pv.heartbeat = path.RTT, p.punch.Heartbeat()
		}
		v.peers[k] = pv
	}
	if a := c.turn.alloc; a != nil {
		v.turn = &TURNStatus{Server: a.URI(), Relayed: a.Addr().String()}
	}
	c.view.Store(v)
}
