// Package link is the seam between the peer's control plane
// (tunnel/control) and its data path (tunnel/bind): the values both sides
// share — where a peer's packets go (Route), when WireGuard last used the
// peer (Activity) — and the interfaces through which the control plane
// steers the data path (DataPath, Peer). Neither side imports the other;
// the root package tunnel wires them together, as wireguard-go's device
// meets its socket only through conn.Bind.
//
// It knows neither how packets are read and written nor why a route was
// chosen.
package link

import (
	"bytes"
	"net"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/turnrelay"
)

// Route is where a peer's packets go: to the peer itself, or to a relay
// that forwards them.
type Route struct {
	Dst   netip.AddrPort // the peer or the relay; invalid for no route
	Relay bool           // Dst relays for us
	// Stream, when set, carries relayed packets over TCP instead of UDP.
	Stream *wire.Stream
	// Socket, when set, sends instead of the shared socket: the socket a
	// birthday punch won with, the only one the peer's NAT lets through.
	Socket *net.UDPConn
	// TURN, when set, relays: Dst is the peer's relayed address on a TURN
	// server, reached through our own allocation.
	TURN *turnrelay.Allocation
}

// Kind names a route as status shows it: direct, lan, relay or relay-tcp.
func (r Route) Kind() string {
	switch {
	case !r.Dst.IsValid():
		return nat.PathNone.String()
	case r.Stream != nil:
		return "relay-tcp"
	case r.Relay:
		return "relay"
	}
	return nat.KindOf(r.Dst).String()
}

// Activity is when WireGuard last sent to a peer, last got a packet from
// it, and last got or sent one that was not a keepalive: sending without
// hearing back marks a path suspect, and data either way marks the
// tunnel in use. A time never set is the Unix epoch.
type Activity struct {
	Sent, Received, Data time.Time
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

// DataPath is what the control plane asks of the data path: the shared
// socket's port and control packets, the peers' routes, and the packets
// that arrive off the shared socket. Its methods never block on the
// network, and the callbacks it calls run on the data path's goroutines:
// they must not block either.
type DataPath interface {
	// Peer returns the peer's endpoint, creating it on first use.
	Peer(k key.Key) Peer
	// RemovePeer forgets the peer: its packets are strangers' from now on.
	RemovePeer(k key.Key)
	// Port is the shared socket's port.
	Port() uint16
	// SendTo writes one control packet to dst on the shared socket.
	SendTo(pkt []byte, dst netip.AddrPort) error
	// SetRelays names the rendezvous whose relay frames are accepted.
	SetRelays(addrs []netip.AddrPort)
	// SetTURNPeers names the peers' relayed addresses on TURN servers:
	// WireGuard from there through our allocation is theirs.
	SetTURNPeers(peers map[netip.AddrPort]key.Key)
	// InjectRelayed takes a relay frame that came over a rendezvous's TCP
	// stream and passes its WireGuard packet on; false when the frame is
	// not one for WireGuard (then it is the control plane's).
	InjectRelayed(frame []byte) bool
	// ServeSocket reads a birthday socket that reaches peer until it is
	// closed: WireGuard goes to WireGuard, the rest to control with its
	// source. bufSize is the first read buffer's size.
	ServeSocket(conn *net.UDPConn, peer key.Key, bufSize int, control func(pkt []byte, src netip.AddrPort))
	// ServeTURN reads what comes through a TURN allocation until it is
	// closed, as ServeSocket does.
	ServeTURN(a *turnrelay.Allocation, control func(pkt []byte, src netip.AddrPort))
	// OnMsgSize sets what is called when a batch to dst was too big for
	// the path.
	OnMsgSize(f func(dst netip.AddrPort))
	// OnRelayedInitiation sets what is called when a peer's handshake
	// initiation came through a relay while its route is direct.
	OnRelayedInitiation(f func(peer key.Key))
	// OnRelayedWhileTURN sets what is called, now and then, when a peer's
	// packets come through a rendezvous's relay while its route is TURN.
	OnRelayedWhileTURN(f func(peer key.Key))
	// OnUnknownDestination sets what is called, without blocking, when a
	// packet to an address of the network that no peer holds is held.
	OnUnknownDestination(f func(dst netip.Addr))
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

// Leads reports whether we, with public key ours, lead the pair with
// theirs: the smaller key sends the path's heartbeats (nat.Punch) and
// wins crossed handshakes (tunnel/bind).
func Leads(ours, theirs key.Key) bool { return bytes.Compare(ours[:], theirs[:]) < 0 }
