package transport

import (
	"encoding/binary"
	"net/netip"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/turnrelay"
)

// TURN is a TURN allocation (turnrelay.Allocation), one for every peer:
// packets go to a peer's relayed address, or to where our relay reaches
// its NAT, and what peers send our relayed address comes through it.
type TURN struct {
	*turnrelay.Allocation
	udp udpWriter // the allocation's UDP socket, if it has one
}

// NewTURN returns the transport through a.
func NewTURN(a *turnrelay.Allocation) *TURN {
	return &TURN{Allocation: a, udp: udpWriter{conn: a.UDPConn()}}
}

// Send sends bufs through the allocation to dst. Once pion has bound the
// peer a channel, they go as ChannelData (a 4-byte header: the channel and
// the length), GSO-batched on the allocation's UDP socket as on a birthday
// socket: pion's WriteTo makes one system call a packet, which cost two
// thirds of the sender's CPU. Until then, and over TCP, pion sends them
// (and binds the channel); what its full queue refuses is link.Dropped.
func (t *TURN) Send(bufs [][]byte, _ key.Key, dst netip.AddrPort) error {
	ch, ok := t.Channel(dst)
	if !ok || t.udp.conn == nil {
		dropped := 0
		for _, p := range bufs {
			if !t.Allocation.Send(p, dst) {
				dropped++
			}
		}
		if dropped > 0 {
			return link.Dropped(dropped)
		}
		return nil
	}
	rf := frame(bufs, 4, func(buf, p []byte) []byte {
		buf = binary.BigEndian.AppendUint16(buf, ch)
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(p)))
		return append(buf, p...)
	})
	err := t.udp.write(rf.frames, t.Server())
	framePool.Put(rf)
	return err
}

func (t *TURN) Kind() link.PathKind { return link.TURN }

func (t *TURN) Close() error {
	t.Allocation.Close()
	return nil
}

// Receive hands deliver what comes through the allocation, from the
// peers' addresses, until it is closed.
func (t *TURN) Receive(deliver func(pkt []byte, src netip.AddrPort) bool) error {
	buf := make([]byte, 65536)
	for {
		n, src, err := t.ReadFrom(buf)
		if err != nil {
			return err
		}
		deliver(buf[:n], src)
	}
}
