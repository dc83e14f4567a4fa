package control

import (
	"net/netip"

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
