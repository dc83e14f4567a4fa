package control

import (
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// events is what the data path tells the control plane (link.Events), on
// the data path's goroutines: each hands its news to the control
// goroutine without blocking.
type events struct{ c *Control }

// Control queues a control packet, which came from src by via.
func (e events) Control(pkt []byte, src netip.AddrPort, via link.Transport) {
	e.c.enqueue(pkt, inbound{src: src, via: via})
}

func (e events) MsgSize(dst netip.AddrPort)        { e.c.queuePathCheck(dst) }
func (e events) RelayedInitiation(peer key.Key)    { notify(e.c.relayedInitiations)(peer) }
func (e events) RelayedWhileTURN(peer key.Key)     { notify(e.c.relayedOnTURN)(peer) }
func (e events) UnknownDestination(dst netip.Addr) { notify(e.c.unknownDsts)(dst) }

// inbound is a packet for the control goroutine.
type inbound struct {
	pkt []byte
	src netip.AddrPort
	at  time.Time
	// via is the transport it came by: the shared socket, a rendezvous's
	// TCP stream, a birthday socket, or our TURN allocation (from a
	// peer's relayed address: a hello, or a relay-framed probe; turnRelay)
	via link.Transport
	// gossip: a member's gossip from inside the tunnel, from this address,
	// on gossipIn
	gossip netip.Addr
}

// came reports whether m came by a transport of kind k.
func (m inbound) came(k link.PathKind) bool { return m.via != nil && m.via.Kind() == k }

// notify sends on ch without blocking: a full channel means the control
// goroutine has such news pending anyway.
func notify[T any](ch chan<- T) func(T) {
	return func(v T) {
		select {
		case ch <- v:
		default:
		}
	}
}
