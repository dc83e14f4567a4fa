package bind

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/tunnel/link"
)

// The Bind's send side: WireGuard's packets go the way their peer's route
// says, through its transport (tunnel/transport), a batch at a time; handshake
// messages are held, copied and answered the way they came (handshakes).

// Send writes WireGuard packets to ep.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
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
		if !isHandshake(bufs[0]) {
			pe.lastUse.Store(now.UnixNano())
		}
	}
	if len(bufs) <= 2 && isHandshake(bufs[0]) {
		// Handshakes come alone (or as the two a new route takes).
		return b.sendHandshakes(bufs, pe, r, now)
	}
	if r == nil {
		return nil
	}
	return b.sendRoute(bufs, pe, r, now)
}

// sendRoute sends bufs for pe the way r says, at now. What a transport
// drops for want of room is counted as a full socket buffer's would be.
func (b *Bind) sendRoute(bufs [][]byte, pe *PeerEndpoint, r *route, now time.Time) error {
	pe.lastOut.Store(now.UnixNano())
	if kind := r.Via.Kind(); kind.Relayed() {
		b.relayBytes[kind][tx].Add(size(bufs))
	}
	err := r.Via.Send(bufs, pe.peer, r.Dst)
	if d, ok := err.(link.Dropped); ok {
		b.Dropped.Add(uint64(d))
		return nil
	}
	return err
}

// size is the bytes of bufs.
func size(bufs [][]byte) uint64 {
	n := 0
	for _, p := range bufs {
		n += len(p)
	}
	return uint64(n)
}

// isMsgSize reports whether a send failed because a datagram exceeds the
// path MTU the kernel knows for its destination.
func isMsgSize(err error) bool { return errors.Is(err, syscall.EMSGSIZE) }

// sendStd sends bufs to dst on the shared socket. A batch the kernel
// refuses as too big for the path (the path MTU the kernel learned from
// ICMP is smaller than the batch's datagrams, and it refuses UDP GSO
// batches whole, while it fragments a single datagram) goes again one
// datagram at a time, and the control plane hears of the path
// (Events.MsgSize), which it then fits the peer's routes to.
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
	b.events.MsgSize(dst.AddrPort)
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
// holds them while r is nil; the leader's initiation that crosses the
// peer's it let through goes later or not at all (ownCrossing).
func (b *Bind) sendHandshakes(bufs [][]byte, pe *PeerEndpoint, r *route, now time.Time) error {
	out := make([][]byte, 0, len(bufs))
	for _, p := range bufs {
		switch pe.ownCrossing(p, now, now) {
		case crossSend:
			out = append(out, p)
		case crossWait:
			init, came := bytes.Clone(p), now
			var again func()
			again = func() {
				now := time.Now()
				if b.resumedAt.Load() > came.UnixNano() {
					return // made before a freeze, which Resumed forgot
				}
				switch pe.ownCrossing(init, came, now) {
				case crossSend:
					b.sendHandshakesNow([][]byte{init}, pe, pe.route.Load(), now)
				case crossWait:
					b.later(crossSettle/4, again)
				}
			}
			b.later(crossSettle, again)
		}
	}
	return b.sendHandshakesNow(out, pe, r, now)
}

// sendHandshakesNow sends handshake messages for pe on r, or holds them
// while r is nil, and sends their copies.
func (b *Bind) sendHandshakesNow(bufs [][]byte, pe *PeerEndpoint, r *route, now time.Time) error {
	pe.sending(bufs, r, now)
	var err error
	for _, p := range bufs {
		out := r
		if via := pe.replyPath(p, r, now); via != nil {
			out = via
		}
		if p[0] == wireGuardInitiation {
			pe.retransmit(bytes.Clone(p), now) // until answered, held or not
		}
		if out == nil {
			continue // held
		}
		if e := b.sendRoute([][]byte{p}, pe, out, now); err == nil {
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
					b.sendRoute([][]byte{dup}, pe, r, time.Now())
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
