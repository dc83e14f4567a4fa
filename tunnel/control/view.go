package control

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// View is what the control plane shows of itself. The control goroutine
// publishes a new one after every event it handles (publish); status,
// metrics and ping read the latest without waiting for it, and a view,
// once published, is never changed.
type View struct {
	NAT     nat.Mapping
	Servers []ServerView
	Peers   map[key.Key]PeerView
	TURN    *TURNView // our allocation, while there is one
	// Refused is why the rendezvous refuses our certificate ("" when it
	// takes it, or there is none).
	Refused string
	// The network's documents held: the policy enforced (nil: none), the
	// revocations and the keys they revoke, the documents refused.
	Policy                   *cert.Document
	Revocations, RevokedKeys int
	RetiredCerts             int // certificates retired, not yet expired
	DocumentsRefused         uint64
	// Members' gossip dropped: over a member's budget or for a full
	// queue (limited), or of no use (junk: malformed, not our network's).
	GossipLimited, GossipJunk uint64
	// StateWarning says what this member forgets on restart, when its
	// network state cannot be kept (kept); "" when it is kept.
	StateWarning string
	// PortMapping is the router's port forward to us (portMapper).
	PortMapping PortMappingStatus
}

// ServerView is one rendezvous.
type ServerView struct {
	HostPort   string
	Registered bool
	Observed   netip.AddrPort // our endpoint as it sees us
	// TCP is the TCP link's remote address while there is one, and
	// TCPReason why it was opened.
	TCP, TCPReason string
}

// PeerView is one peer the control plane finds.
type PeerView struct {
	Path    string
	NAT     nat.Mapping
	History []PathChange // shared with the peer: appends copy (updateRoute)
	Probing bool
	Route   netip.AddrPort
	Relay   bool
	Reason  string // why relayed
	Via     string // the relay: a rendezvous's address or a TURN server's URI
	PathMTU int
	MTU     int // what the tunnel carries whole to the peer, once PathMTU is known
	// On a direct path: its round trip and the heartbeat that keeps it.
	RTT       time.Duration
	Heartbeat time.Duration
	// Member is its certificate, for a member of the network.
	Member *cert.Cert
}

// TURNView is our allocation on a TURN server.
type TURNView struct {
	Server  string // its URI, as the rendezvous handed it out
	Relayed string // our relayed address, where peers send
}

// View returns the latest view; before the control goroutine has
// published one, an empty one.
func (c *Control) View() *View {
	if v := c.view.Load(); v != nil {
		return v
	}
	return &View{}
}

// publish makes the control plane's state at now the view status reads.
func (c *Control) publish(now time.Time) {
	v := &View{NAT: c.mapping, Servers: make([]ServerView, 0, len(c.servers)), Peers: make(map[key.Key]PeerView, len(c.peers))}
	for _, s := range c.servers {
		sv := ServerView{HostPort: s.hostport, Registered: s.reg.Registered(), Observed: s.observed}
		if s.stream != nil {
			sv.TCP = s.stream.RemoteAddr().String()
			sv.TCPReason = fmt.Sprintf("no answer over UDP within %v of the first STUN request, at %s", udpGiveUp, c.blockedAt.UTC().Format(time.RFC3339))
		}
		v.Servers = append(v.Servers, sv)
	}
	for k, p := range c.peers {
		r := p.ep.Route()
		pv := PeerView{Path: p.path, NAT: p.nat, History: p.history, Probing: p.punch.Punching(now), Route: r.Dst, Relay: r.Relayed()}
		if p.mtu.path > 0 {
			pv.PathMTU, pv.MTU = p.mtu.path, cmp.Or(p.mtu.route, c.peerDeps.ifaceMTU)
		}
		if r.Relayed() {
			pv.Reason, pv.Via = p.relayReason(now), p.relayName(r)
		} else if path := p.punch.Path(); path.Addr.IsValid() {
			pv.RTT, pv.Heartbeat = path.RTT, p.punch.Heartbeat()
		}
		pv.Member = p.member
		v.Peers[k] = pv
	}
	if r := c.members.refused; r != 0 {
		v.Refused = r.String()
	}
	if h := c.docs.held; h != nil {
		v.Policy, v.Revocations, v.RevokedKeys, v.RetiredCerts = h.Policy(), len(h.Revocations()), h.RevokedKeys(), h.RetiredCerts()
	}
	v.DocumentsRefused, v.StateWarning = c.docs.Refused.Load(), c.kept.warning
	v.PortMapping = c.portmap.view(now)
	v.GossipLimited, v.GossipJunk = c.docs.gossip.gate.Limited.Load(), c.docs.gossip.Junk.Load()
	if a := c.turn.alloc; a != nil {
		v.TURN = &TURNView{Server: a.URI(), Relayed: a.Addr().String()}
	}
	c.view.Store(v)
}

// MemberRefusals counts the members this interface refused, by reason
// (cert.Reason as index). It may be called from any goroutine.
func (c *Control) MemberRefusals() map[string]uint64 {
	out := map[string]uint64{}
	for r := cert.Reason(1); r < cert.NumReasons; r++ {
		out[r.String()] = c.members.Refusals[r].Load()
	}
	return out
}

// PingResult is the outcome of one Ping: the way the pong came (direct,
// lan, relay or relay-tcp) and from where, and the round trip.
type PingResult struct {
	Path     string
	Endpoint netip.AddrPort
	RTT      time.Duration
}

// Ping probes peer once on its current route and waits up to timeout for
// the pong (peer.probe).
func (c *Control) Ping(peer key.Key, timeout time.Duration) (PingResult, error) {
	var (
		w    *probeWait
		sent link.Route
		err  error
	)
	if !c.call(func() {
		p := c.peers[peer]
		if p == nil {
			err = errors.New("the peer has a fixed Endpoint: no probes")
			return
		}
		w, sent, err = p.probe()
	}) {
		err = errors.New("the tunnel is going down")
	}
	if err != nil {
		return PingResult{}, err
	}
	select {
	case res := <-w.done:
		return PingResult{Path: res.path, Endpoint: res.from, RTT: res.at.Sub(w.sent)}, nil
	case <-c.done:
		probes.Delete(w.tx)
		return PingResult{}, errors.New("the tunnel is going down")
	case <-time.After(timeout):
		probes.Delete(w.tx)
		return PingResult{}, fmt.Errorf("no pong within %v (sent on the %s path to %s)", timeout, sent.Kind(), sent.Dst)
	}
}
