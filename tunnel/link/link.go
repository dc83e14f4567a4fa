// Package link is the seam between the peer's control plane
// (tunnel/control) and its data path (tunnel/bind): the values both sides
// share — the ways packets travel (Transport), where a peer's go (Route:
// a destination and a transport), when WireGuard last used the peer
// (Activity) — and the interfaces through which the control plane steers
// the data path (DataPath, Peer) and hears from it (Events). Neither side
// imports the other;
// the root package tunnel wires them together, as wireguard-go's device
// meets its socket only through conn.Bind.
//
// It knows neither how packets are read and written nor why a route was
// chosen.
package link

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Activity is when WireGuard last sent to a peer (not a keepalive), last
// got a packet from it, last got one that was not a keepalive (Data),
// last sent or got data (Use: neither a keepalive nor a handshake
// message), and last sent or got any packet (Any). Sending without
// hearing back marks a path suspect; use marks the tunnel in use, its
// path checked whenever it falls silent. A handshake alone is no use:
// WireGuard makes one on its own when it heard nothing after its last
// data, and an idle tunnel must stay quiet after it. Any packet, a
// keepalive too, keeps the NATs' mappings on the way: a heartbeat after
// one shows nothing of how long they keep an idle one (nat.Punch). A time
// never set is the Unix epoch.
type Activity struct {
	Sent, Received, Data, Use, Any time.Time
}

// Peer is the data path's side of one peer.
type Peer interface {
	// Route is where the peer's packets go now; its Dst is invalid while
	// there is none.
	Route() Route
	// SetRoute points the peer at r, or at nothing for an invalid r.Dst;
	// a held handshake leaves at once.
	SetRoute(r Route)
	// Learn records that the peer authenticated itself from src, so that
	// WireGuard packets from there are the peer's.
	Learn(src netip.AddrPort)
	Activity() Activity
}

// DataPath is what the control plane asks of the data path: the peers'
// routes, the transports on the shared socket, reading the transports it
// opens, and the packets to the tunnel's members. Its methods never block
// on the network (but Serve, which reads), and it tells the control plane
// what it sees through the Events given it at construction.
type DataPath interface {
	// Peer returns the peer's endpoint, creating it on first use.
	Peer(k key.Key) Peer
	// RemovePeer forgets the peer: its packets are strangers' from now on.
	RemovePeer(k key.Key)
	// Port is the shared socket's port.
	Port() uint16
	// Shared is the shared socket; Relay the rendezvous's relay on it
	// (the rendezvous at a route's Dst).
	Shared() Transport
	Relay() Transport
	// Serve reads t until it is closed: WireGuard goes to WireGuard, the
	// rest to Events.Control. peer is the one peer t carries (a birthday
	// socket), or the zero key for a relay that carries any. A transport
	// that is not a Receiver has nothing to read: Serve returns at once.
	// The caller runs it on a goroutine it joins.
	Serve(t Transport, peer key.Key)
	// SetRelays names the rendezvous whose relay frames are accepted.
	SetRelays(addrs []netip.AddrPort)
	// SetTURNPeers names the peers' relayed addresses on TURN servers:
	// WireGuard from there through our allocation is theirs.
	SetTURNPeers(peers map[netip.AddrPort]key.Key)
	// AddDestinations says a peer now in WireGuard holds addrs: what was
	// held for them leaves. RemoveDestinations undoes it.
	AddDestinations(addrs []netip.Addr)
	RemoveDestinations(addrs []netip.Addr)
	// Inject hands wireguard-go pkt as if the TUN had read it: an IP
	// packet of the control plane's own to a peer (a member's gossip).
	Inject(pkt []byte)
	// Alive says the control plane ran at now (every tick): while it has
	// not for a while, the process was frozen, and what arrives was sent
	// long ago. Resumed says the control plane found it was: handshake
	// messages from before are forgotten, and initiations that come in
	// the moment after are stale (see tunnel/bind).
	Alive(now time.Time)
	Resumed(now time.Time)
}

// Events is what the data path tells the control plane, on the data
// path's goroutines: none may block, and what they are given they must
// copy to keep.
type Events interface {
	// Control takes a packet that is not WireGuard's (STUN, the
	// rendezvous's, a peer's probe), from src by via.
	Control(pkt []byte, src netip.AddrPort, via Transport)
	// MsgSize: a batch to dst was too big for the path.
	MsgSize(dst netip.AddrPort)
	// RelayedInitiation: a peer's handshake initiation came through a
	// relay while its route is direct.
	RelayedInitiation(peer key.Key)
	// RelayedWhileTURN, now and then: a peer's packets come through a
	// rendezvous's relay while its route is TURN.
	RelayedWhileTURN(peer key.Key)
	// UnknownDestination: a packet to an address of the network that no
	// peer holds is held.
	UnknownDestination(dst netip.Addr)
}

// Leads reports whether we, with public key ours, lead the pair with
// theirs: the smaller key sends the path's heartbeats (nat.Punch) and
// wins crossed handshakes (tunnel/bind).
func Leads(ours, theirs key.Key) bool { return bytes.Compare(ours[:], theirs[:]) < 0 }

// Discard is Events that hears nothing: a data path with no control plane
// (tests, benchmarks).
var Discard Events = discard{}

type discard struct{}

func (discard) Control([]byte, netip.AddrPort, Transport) {}
func (discard) MsgSize(netip.AddrPort)                    {}
func (discard) RelayedInitiation(key.Key)                 {}
func (discard) RelayedWhileTURN(key.Key)                  {}
func (discard) UnknownDestination(netip.Addr)             {}
