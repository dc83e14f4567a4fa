package userspace

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// coalescer is gVisor's GRO for one Write's batch, with the dispatcher it
// delivers to, through which it counts what it delivers.
type coalescer struct {
	gro       gro.GRO
	to        stack.NetworkDispatcher
	delivered int
}

func newCoalescer() *coalescer {
	c := new(coalescer)
	c.gro.Init(true)
	c.gro.Dispatcher = c
	return c
}

func (c *coalescer) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.delivered++
	c.to.DeliverNetworkPacket(proto, pkt)
}

func (c *coalescer) DeliverLinkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.to.DeliverLinkPacket(proto, pkt)
}

// flush delivers every packet GRO holds. gVisor's Flush delivers only the
// first of each of its buckets (it steps to the next packet from one it
// has just unlinked; google/gvisor#14081): the rest, other flows' packets
// of the same batch, would wait for a later batch, or be lost with the
// pooled GRO. Flushing until a flush delivers nothing empties it, however
// many buckets and packets there are.
func (c *coalescer) flush() {
	for {
		c.delivered = 0
		c.gro.Flush()
		if c.delivered == 0 {
			return
		}
	}
}
