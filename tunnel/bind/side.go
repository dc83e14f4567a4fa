package bind

import (
	"net"
	"net/netip"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/turnrelay"
)

// Sockets beside the shared one, whose packets the Bind reads on
// goroutines of the control plane's (which owns and closes the sockets):
// the birthday sockets of a round towards a peer behind an easy NAT from
// behind a hard one, and a TURN allocation.

// ServeSocket reads one birthday socket of peer's until it closes. A
// datagram bigger than the buffer (a peer with a larger MTU) is lost, and
// the buffer grows for the next. Once WireGuard traffic comes in on it —
// the socket won the round — it takes batches: GRO on, a buffer for 64
// coalesced datagrams, and the shared socket's buffer sizes. What is not
// WireGuard goes to control, with its source; control must copy what it
// keeps.
func (b *Bind) ServeSocket(conn *net.UDPConn, peer key.Key, bufSize int, control func(pkt []byte, src netip.AddrPort)) {
	pe := b.PeerEndpoint(peer)
	buf, oob := make([]byte, bufSize), groOOB()
	carrying := false
	for {
		n, oobn, flags, src, err := conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			return
		}
		if flags&msgTrunc != 0 {
			b.Dropped.Add(1)
			buf = make([]byte, 65536)
			continue
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		seg := groSegment(oob[:oobn])
		if seg <= 0 {
			seg = n
		}
		wireGuard := false
		for data := buf[:n]; len(data) > 0; {
			pkt := data[:min(seg, len(data))]
			data = data[len(pkt):]
			delivered := false
			b.injectFrom(pkt, pe, func(pkt []byte) {
				delivered = true
				control(pkt, src)
			})
			wireGuard = wireGuard || !delivered
		}
		if wireGuard && !carrying {
			carrying = true
			buf = make([]byte, 65536)
			enableCarrying(conn)
		}
	}
}

// ServeTURN hands what peers send through the allocation to WireGuard,
// until it is closed: WireGuard only from a peer's relayed address
// (SetTURNPeers); hellos and probes, sealed, to control, which opens
// them and must copy what it keeps.
func (b *Bind) ServeTURN(a *turnrelay.Allocation, control func(pkt []byte, src netip.AddrPort)) {
	buf := make([]byte, 65536)
	for {
		n, src, err := a.ReadFrom(buf)
		if err != nil {
			return
		}
		pe := (*b.turnPeers.Load())[src]
		kind := Classify(buf[:n])
		if kind == PacketControl || kind == PacketRelay && isRelayedControl(buf[:n]) {
			control(buf[:n], src)
			continue
		}
		if pe == nil || kind != PacketWireGuard {
			b.Dropped.Add(1)
			continue
		}
		b.relayBytes[relayTURN][rx].Add(uint64(n))
		b.inject(buf[:n], pe)
		b.relayedHandshake(pe, buf[:n])
	}
}
