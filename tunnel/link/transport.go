package link

import (
	"fmt"
	"net/netip"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Transport is one way a peer's packets leave: the shared socket, a
// rendezvous's relay over UDP or over its TCP stream, a birthday socket, a
// TURN allocation. Its values are comparable (pointers), so that routes
// compare. Send never blocks on the network.
type Transport interface {
	// Send writes bufs, packets for peer, to dst: a relay frames them
	// naming peer, the rest send them as they are.
	Send(bufs [][]byte, peer key.Key, dst netip.AddrPort) error
	// Kind says what the transport is, for path choice, status and
	// metrics.
	Kind() PathKind
	// Close closes what the transport owns: nothing for the shared
	// socket and the relay on it, which the data path closes.
	Close() error
}

// Receiver is a transport with a socket of its own (all but the shared
// socket and the relay on it, whose packets WireGuard reads): the data
// path reads it (DataPath.Serve).
type Receiver interface {
	Transport
	// Receive reads until the transport is closed, handing deliver each
	// packet and its source; deliver reports whether the packet was
	// WireGuard's (a socket that carries WireGuard reads in batches from
	// then on), and must copy what it keeps.
	Receive(deliver func(pkt []byte, src netip.AddrPort) (wireGuard bool)) error
}

// PathKind is what a transport is.
type PathKind uint8

const (
	// Shared is the shared socket, to the peer itself.
	Shared PathKind = iota
	// Socket is a socket of its own to the peer (a birthday round's
	// winner).
	Socket
	// Relay is a rendezvous's relay, over the shared socket.
	Relay
	// RelayTCP is a rendezvous's relay over its TCP stream.
	RelayTCP
	// TURN is a TURN allocation.
	TURN
	// NumPathKinds counts the kinds.
	NumPathKinds
)

// Relayed reports whether the kind goes through a relay, not to the peer
// itself.
func (k PathKind) Relayed() bool { return k >= Relay }

// relayNames name the kinds of relay in status's relayed_bytes and the
// metrics; "" for the kinds that do not relay.
var relayNames = [NumPathKinds]string{Relay: "rendezvous", RelayTCP: "rendezvous-tcp", TURN: "turn"}

// RelayName is the kind's name in status's relayed_bytes and the
// metrics, "" for a kind that does not relay.
func (k PathKind) RelayName() string { return relayNames[k] }

// Route is where a peer's packets go: a transport, and the peer or the
// relay it sends to.
type Route struct {
	Dst netip.AddrPort // the peer or the relay; invalid for no route
	Via Transport      // nil for no route
}

// Valid reports whether r leads anywhere.
func (r Route) Valid() bool { return r.Dst.IsValid() && r.Via != nil }

// Is reports whether r goes by a transport of kind k.
func (r Route) Is(k PathKind) bool { return r.Via != nil && r.Via.Kind() == k }

// Relayed reports whether r goes through a relay.
func (r Route) Relayed() bool { return r.Via != nil && r.Via.Kind().Relayed() }

// Kind names a route as status shows it: direct, lan, relay or relay-tcp
// (a TURN route is a relay).
func (r Route) Kind() string {
	switch {
	case !r.Valid():
		return nat.PathNone.String()
	case r.Is(RelayTCP):
		return "relay-tcp"
	case r.Relayed():
		return "relay"
	}
	return nat.KindOf(r.Dst).String()
}

// Dropped is what Send returns when it dropped that many packets for want
// of room (a full send queue), as a full socket buffer would: the data
// path counts them rather than report an error.
type Dropped int

func (d Dropped) Error() string { return fmt.Sprintf("%d packets dropped: send queue full", int(d)) }
