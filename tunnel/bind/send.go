package bind

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// The Bind's send side: WireGuard's packets go the way their peer's route
// says, straight or framed for the relay, a batch at a time; handshake
// messages are held, copied and answered the way they came (handshake.go).

// Send writes WireGuard packets to ep.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	err := b.send(bufs, ep)
	b.out.done(dataPackets(bufs))
	return err
}

func (b *Bind) send(bufs [][]byte, ep conn.Endpoint) error {
	pe, ok := ep.(*PeerEndpoint)
	if !ok {
		b.lastFixed.Store(time.Now().UnixNano()) // a peer with a fixed Endpoint
		if std, ok := ep.(*conn.StdNetEndpoint); ok {
			return b.sendStd(bufs, std)
		}
		return b.std.Send(bufs, ep)
	}
	r := pe.route.Load()
	now := time.Now()
	if r != nil && (len(bufs) > 1 || !isKeepalive(bufs[0])) {
		// A keepalive expects no answer: it does not count as sending.
		pe.lastSent.Store(now.UnixNano())
	}
	if len(bufs) <= 2 && isHandshake(bufs[0]) {
		// Handshakes come alone (or as the two a new route takes).
		return b.sendHandshakes(bufs, pe, r, now)
	}
	if r == nil {
		return nil
	}
	return b.sendRoute(bufs, pe, r)
}

// sendRoute sends bufs for pe the way r says.
func (b *Bind) sendRoute(bufs [][]byte, pe *PeerEndpoint, r *route) error {
	switch {
	case r.TURN != nil:
		b.relayBytes[relayTURN][tx].Add(size(bufs))
		return b.sendTURN(bufs, r)
	case r.Stream != nil:
		b.relayBytes[relayRendezvousTCP][tx].Add(size(bufs))
		return r.Stream.WriteRelayed(pe.peer, bufs)
	case r.Relay:
		b.relayBytes[relayRendezvous][tx].Add(size(bufs))
		return b.sendRelayed(bufs, pe.peer, &r.std)
	case r.Socket != nil:
		return b.sendSide(r.Socket, r.Dst, bufs)
	}
	return b.sendStd(bufs, &r.std)
}

// size is the bytes of bufs.
func size(bufs [][]byte) uint64 {
	n := 0
	for _, p := range bufs {
		n += len(p)
	}
	return uint64(n)
}

// relayFrames holds the relay frames of one Send, end to end in buf.
type relayFrames struct {
	frames [][]byte
	buf    []byte
}

// frame puts each packet of bufs behind a header of headerLen bytes that
// appendFrame writes. WireGuard's buffers have no room in front (its
// packets start at the buffer's first byte), so the frames are copies, from
// a pool; put them back with b.framePool.Put. They lie end to end in one
// buffer, and each frame's capacity runs on over the next ones: StdNetBind
// batches same-size packets into one UDP GSO message by appending each
// behind the first, which here writes every frame onto itself. Without
// that room it would send them one datagram each.
func (b *Bind) frame(bufs [][]byte, headerLen int, appendFrame func(buf, p []byte) []byte) *relayFrames {
	rf := b.framePool.Get().(*relayFrames)
	n := 0
	for _, p := range bufs {
		n += headerLen + len(p)
	}
	if cap(rf.buf) < n {
		rf.buf = make([]byte, 0, n) // never grown below: frames point into it
	}
	buf, frames := rf.buf[:0], rf.frames[:0]
	for _, p := range bufs {
		start := len(buf)
		buf = appendFrame(buf, p)
		frames = append(frames, buf[start:])
	}
	rf.frames = frames
	return rf
}

// sendRelayed wraps each packet in a relay frame naming peer.
func (b *Bind) sendRelayed(bufs [][]byte, peer key.Key, relay *conn.StdNetEndpoint) error {
	rf := b.frame(bufs, wire.RelayHeaderLen, func(buf, p []byte) []byte { return wire.AppendRelay(buf, peer, p) })
	err := b.sendStd(rf.frames, relay)
	b.framePool.Put(rf)
	return err
}

// sendTURN sends bufs through a TURN allocation to r.Dst. Once pion has
// bound the peer a channel, they go as ChannelData (a 4-byte header: the
// channel and the length), GSO-batched on the allocation's UDP socket as
// on a birthday socket: pion's WriteTo makes one system call a packet,
// which cost two thirds of the sender's CPU. Until then, and over TCP,
// pion sends them (and binds the channel).
func (b *Bind) sendTURN(bufs [][]byte, r *route) error {
	conn := r.TURN.UDPConn()
	ch, ok := r.TURN.Channel(r.Dst)
	if !ok || conn == nil {
		for _, p := range bufs {
			if !r.TURN.Send(p, r.Dst) {
				b.Dropped.Add(1)
			}
		}
		return nil
	}
	rf := b.frame(bufs, 4, func(buf, p []byte) []byte {
		buf = binary.BigEndian.AppendUint16(buf, ch)
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(p)))
		return append(buf, p...)
	})
	err := b.sendSide(conn, r.TURN.Server(), rf.frames)
	b.framePool.Put(rf)
	return err
}

// SendTo writes one control packet to dst.
func (b *Bind) SendTo(pkt []byte, dst netip.AddrPort) error {
	return b.sendStd([][]byte{pkt}, &conn.StdNetEndpoint{AddrPort: dst})
}

// sendSide writes bufs on a side socket (a birthday round's winner, a TURN
// allocation's UDP socket): in GSO batches while the kernel takes them
// (segment_linux.go), else one datagram at a time.
func (b *Bind) sendSide(conn *net.UDPConn, dst netip.AddrPort, bufs [][]byte) error {
	if len(bufs) > 1 && !b.noSideGSO.Load() {
		scratch := b.segmentPool.Get().(*[]byte)
		sent, err := sendSegmented(conn, dst, bufs, *scratch)
		b.segmentPool.Put(scratch)
		if !errors.Is(err, errNoGSO) {
			return err
		}
		b.noSideGSO.Store(true)
		bufs = bufs[sent:]
	}
	for _, p := range bufs {
		if _, err := conn.WriteToUDPAddrPort(p, dst); err != nil {
			return err
		}
	}
	return nil
}

// isMsgSize reports whether a send failed because a datagram exceeds the
// path MTU the kernel knows for its destination.
func isMsgSize(err error) bool { return errors.Is(err, syscall.EMSGSIZE) }

// sendStd sends bufs to dst on the shared socket. A batch the kernel
// refuses as too big for the path (the path MTU the kernel learned from
// ICMP is smaller than the batch's datagrams, and it refuses UDP GSO
// batches whole, while it fragments a single datagram) goes again one
// datagram at a time, and the control plane hears of the path
// (onMsgSize), which it then fits the peer's routes to.
func (b *Bind) sendStd(bufs [][]byte, dst *conn.StdNetEndpoint) error {
	err := b.sendStdOnce(bufs, dst)
	if len(bufs) < 2 || !isMsgSize(err) {
		return err
	}
	err = nil
	for _, p := range bufs {
		if e := b.sendStdOnce([][]byte{p}, dst); e != nil {
			err = e
		}
	}
	if f := b.onMsgSize.Load(); f != nil {
		(*f)(dst.AddrPort)
	}
	return err
}

// sendStdOnce sends bufs to dst on the shared socket: IPv6 on StdNetBind's
// own IPv6 socket (see stdIPv6Conn), the rest through StdNetBind.
func (b *Bind) sendStdOnce(bufs [][]byte, dst *conn.StdNetEndpoint) error {
	if v6 := b.ipv6.Load(); v6 != nil && dst.Addr().Is6() && !dst.Addr().Is4In6() {
		ua := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst.Addr(), dst.Port()))
		for _, p := range bufs {
			if _, err := v6.WriteToUDP(p, ua); err != nil {
				return err
			}
		}
		return nil
	}
	return b.std.Send(bufs, dst)
}

// sendHandshakes sends WireGuard's handshake messages for pe on r, or
// holds them while r is nil (handshake.go).
func (b *Bind) sendHandshakes(bufs [][]byte, pe *PeerEndpoint, r *route, now time.Time) error {
	pe.sending(bufs, r, now)
	var err error
	for _, p := range bufs {
		out := r
		if via := pe.replyPath(p, r, now); via != nil {
			out = via
		}
		if p[0] == wireGuardInitiation {
			pe.retransmit(bytes.Clone(p), now) // until answered, held or not (retransmit.go)
		}
		if out == nil {
			continue // held
		}
		if e := b.sendRoute([][]byte{p}, pe, out); err == nil {
			err = e
		}
		if p[0] == wireGuardInitiation {
			continue
		}
		// A lost handshake message costs WireGuard's 5 s retry, which is
		// most of the time to connect on a lossy path. A copy of the
		// response a moment later costs a hundred bytes, and when the
		// first arrived WireGuard drops it (a response to a handshake
		// already done). Not at once: two copies handled side by side by
		// WireGuard's handshake workers would both pass. It gets a second
		// copy; after that, the initiator's copies of its initiation ask
		// for it again (reanswer).
		dup := bytes.Clone(p)
		for _, d := range []time.Duration{handshakeCopyDelay, 3 * handshakeCopyDelay} {
			b.later(d, func() {
				// Not once answered: a peer that restarted meanwhile
				// would take the copy for a new handshake, and its
				// own would find no answer it can use.
				if r := pe.route.Load(); r != nil && !pe.answered(dup) {
					b.sendRoute([][]byte{dup}, pe, r)
				}
			})
		}
	}
	return err
}

// later runs f after d, unless the Bind is closed first: Close stops
// every such timer, so nothing is sent once it returns.
func (b *Bind) later(d time.Duration, f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timers == nil {
		return // closed
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		b.mu.Lock()
		_, live := b.timers[t]
		delete(b.timers, t)
		b.mu.Unlock()
		if live {
			f()
		}
	})
	b.timers[t] = struct{}{}
}
