package bind

import (
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/rendezvous/wire"
)

// The Bind's receive side: WireGuard's receive functions, wrapped so that
// control packets go to the control plane and relay frames are unwrapped,
// and the packets of side sockets (birthday, TCP relay, TURN) injected.

// receiveSide hands WireGuard the packets that came off the shared socket,
// a batch at a time, until the Bind is closed.
func (b *Bind) receiveSide(closed chan struct{}) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (n int, err error) {
		b.in.wait()
		defer func() { b.in.add(heldData(bufs, sizes, n)) }()
		var p sidePacket
		select {
		case p = <-b.side:
		case <-closed:
			return 0, net.ErrClosed
		}
		for {
			sizes[n] = copy(bufs[n], *p.buf)
			eps[n] = p.ep
			b.sidePool.Put(p.buf)
			n++
			if n == len(bufs) {
				return n, nil
			}
			select {
			case p = <-b.side:
			default:
				return n, nil
			}
		}
	}
}

// inject queues a WireGuard packet from pe that arrived off the shared
// socket.
func (b *Bind) inject(pkt []byte, pe *PeerEndpoint) {
	if !pe.received(pkt, netip.AddrPort{}, false) {
		return
	}
	buf := b.sidePool.Get().(*[]byte)
	*buf = append((*buf)[:0], pkt...)
	select {
	case b.side <- sidePacket{buf: buf, ep: pe}:
	default:
		b.sidePool.Put(buf)
		b.Dropped.Add(1)
	}
}

// InjectRelayed takes a relay frame that came over a TCP stream from a
// rendezvous, and passes its WireGuard packet on as if it had come over
// UDP. It reports whether the frame was one.
func (b *Bind) InjectRelayed(frame []byte) bool {
	if !wire.IsRelay(frame) {
		return false
	}
	if pe := b.relayedFrom(frame); pe != nil {
		b.relayBytes[relayRendezvousTCP][rx].Add(uint64(len(frame) - wire.RelayHeaderLen))
		b.inject(frame[wire.RelayHeaderLen:], pe)
		b.relayedHandshake(pe, frame[wire.RelayHeaderLen:])
		b.relayedWhileTURN(pe)
	} else if isRelayedControl(frame) {
		return false // a relayed probe, for the control plane
	} else {
		b.Dropped.Add(1)
	}
	return true
}

// injectFrom takes a packet that arrived on a side socket for pe's peer:
// WireGuard goes to WireGuard, anything else to deliver.
func (b *Bind) injectFrom(pkt []byte, pe *PeerEndpoint, deliver func(pkt []byte)) {
	switch Classify(pkt) {
	case PacketWireGuard:
		b.inject(pkt, pe)
	case PacketControl, PacketSTUN:
		deliver(pkt)
	default:
		b.Dropped.Add(1)
	}
}

func (b *Bind) wrap(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		b.in.wait()
		n, err := fn(bufs, sizes, eps)
		defer func() { b.in.add(heldData(bufs, sizes, n)) }()
		byAddr := *b.byAddr.Load()
		for i := 0; i < n; i++ {
			if sizes[i] == 0 {
				continue
			}
			pkt := bufs[i][:sizes[i]]
			std, _ := eps[i].(*conn.StdNetEndpoint)
			if std == nil {
				sizes[i] = 0
				continue
			}
			src := netip.AddrPortFrom(std.Addr().Unmap(), std.Port())
			switch Classify(pkt) {
			case PacketWireGuard:
				if pe := byAddr[src]; pe != nil {
					eps[i] = pe
					switch r := pe.route.Load(); {
					case !pe.received(pkt, src, false):
						sizes[i] = 0
					case r != nil && r.TURN != nil:
						// From the peer's TURN relay.
						b.relayBytes[relayTURN][rx].Add(uint64(len(pkt)))
					case !pe.directHeard.Load():
						pe.directHeard.Store(true)
					}
				}
				continue
			case PacketRelay:
				if pe := b.unwrapRelay(pkt, src); pe != nil {
					sizes[i] = copy(bufs[i], pkt[wire.RelayHeaderLen:])
					b.relayBytes[relayRendezvous][rx].Add(uint64(sizes[i]))
					eps[i] = pe
					// Told even of an initiation the crossing rule drops:
					// that the peer sends it by the relay says all the
					// same that our direct path no longer reaches it.
					b.relayedHandshake(pe, bufs[i][:sizes[i]])
					if !pe.received(bufs[i][:sizes[i]], src, true) {
						sizes[i] = 0
					} else {
						b.relayedWhileTURN(pe)
					}
					continue
				}
				// A relayed probe (punchtun ping), through a rendezvous
				// or a peer's TURN relay.
				if ((*b.relays.Load())[src] || byAddr[src] != nil) && isRelayedControl(pkt) {
					b.control(pkt, src)
				} else {
					b.Dropped.Add(1)
				}
			case PacketSTUN, PacketControl:
				b.control(pkt, src)
			default:
				b.Dropped.Add(1)
			}
			sizes[i] = 0
		}
		return n, err
	}
}

// unwrapRelay returns the endpoint of the peer a relay frame comes from, if
// it came from one of our rendezvous and carries WireGuard.
func (b *Bind) unwrapRelay(frame []byte, src netip.AddrPort) *PeerEndpoint {
	if !(*b.relays.Load())[src] {
		return nil
	}
	return b.relayedFrom(frame)
}

// relayedFrom returns the endpoint of the peer a relay frame names, if it
// carries WireGuard.
func (b *Bind) relayedFrom(frame []byte) *PeerEndpoint {
	peer, inner, err := wire.ParseRelay(frame)
	if err != nil || Classify(inner) != PacketWireGuard {
		return nil
	}
	b.mu.Lock()
	pe := b.endpoints[peer]
	b.mu.Unlock()
	return pe
}

// relayedHandshake tells the control plane of an initiation from pe's
// peer that came through a relay while our route to it is direct, and the
// peer had used that path before: a peer that restarted has no direct
// path, and its NAT may no longer let ours in; the control plane then
// leaves it at once rather than after SuspectTimeout, and our data, not
// only the handshake's answer, goes the way that works. (While a path is
// being set up, the peer's handshake comes by the relay because its side
// is not confirmed yet: that says nothing.)
func (b *Bind) relayedHandshake(pe *PeerEndpoint, pkt []byte) {
	if len(pkt) == 0 || pkt[0] != wireGuardInitiation || !pe.directHeard.Load() {
		return
	}
	if r := pe.route.Load(); r == nil || r.Relay {
		return
	}
	if f := b.onRelayedInitiation.Load(); f != nil {
		(*f)(pe.peer)
	}
}

// turnNoticeEvery spaces what relayedWhileTURN tells of one peer.
const turnNoticeEvery = 500 * time.Millisecond

// relayedWhileTURN tells the control plane, now and then, that pe's peer
// sends through a rendezvous's relay while our route to it is TURN: the
// peer left TURN, perhaps because the server is gone, and our packets
// may be going nowhere while we hear it fine.
func (b *Bind) relayedWhileTURN(pe *PeerEndpoint) {
	r := pe.route.Load()
	if r == nil || r.TURN == nil {
		return
	}
	now := time.Now().UnixNano()
	if now-pe.turnNoticed.Load() < int64(turnNoticeEvery) {
		return
	}
	pe.turnNoticed.Store(now)
	if f := b.onRelayedWhileTURN.Load(); f != nil {
		(*f)(pe.peer)
	}
}
