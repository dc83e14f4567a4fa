package bind

import (
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// The Bind's receive side: WireGuard's receive functions, wrapped by the
// demultiplexer (demux) so that control packets go to the control plane
// and relay frames are unwrapped, and the packets of the other transports
// (Serve) injected.

// receiveSide hands WireGuard the packets that came off the shared socket,
// a batch at a time, until the Bind is closed.
func (b *Bind) receiveSide(closed chan struct{}) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (n int, err error) {
		var p sidePacket
		select {
		case p = <-b.side:
		case <-closed:
			return 0, net.ErrClosed
		}
		for {
			sizes[n] = copy(bufs[n], *p.buf)
			eps[n] = p.ep
			if pkt := bufs[n][:sizes[n]]; isHandshake(pkt) && pkt[0] == wireGuardInitiation {
				p.ep.handed(pkt, time.Now()) // ownCrossing counts from here
			}
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

// fromStream takes a relay frame that came over a TCP stream from a
// rendezvous, and passes its WireGuard packet on as if it had come over
// UDP. It reports whether the frame was one: false for the control
// plane's.
func (b *Bind) fromStream(frame []byte) bool {
	if !wire.IsRelay(frame) {
		return false
	}
	if pe := b.relayedFrom(frame); pe != nil {
		b.relayBytes[link.RelayTCP][rx].Add(uint64(len(frame) - wire.RelayHeaderLen))
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

// demux wraps a receive function of the shared socket: WireGuard from a
// peer's known source carries the peer's endpoint, relay frames from a
// rendezvous are unwrapped, and what is not WireGuard goes to the control
// plane; what WireGuard is not to see has its size zeroed.
func (b *Bind) demux(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
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
					case r != nil && r.Is(link.TURN):
						// From the peer's TURN relay.
						b.relayBytes[link.TURN][rx].Add(uint64(len(pkt)))
					case !pe.directHeard.Load():
						pe.directHeard.Store(true)
					}
				}
				continue
			case PacketRelay:
				if pe := b.unwrapRelay(pkt, src); pe != nil {
					sizes[i] = copy(bufs[i], pkt[wire.RelayHeaderLen:])
					b.relayBytes[link.Relay][rx].Add(uint64(sizes[i]))
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
					b.events.Control(pkt, src, b.shared)
				} else {
					b.Dropped.Add(1)
				}
			case PacketSTUN, PacketControl:
				b.events.Control(pkt, src, b.shared)
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
	if r := pe.route.Load(); r == nil || r.Relayed() {
		return
	}
	b.events.RelayedInitiation(pe.peer)
}

// turnNoticeEvery spaces what relayedWhileTURN tells of one peer.
const turnNoticeEvery = 500 * time.Millisecond

// relayedWhileTURN tells the control plane, now and then, that pe's peer
// sends through a rendezvous's relay while our route to it is TURN: the
// peer left TURN, perhaps because the server is gone, and our packets
// may be going nowhere while we hear it fine.
func (b *Bind) relayedWhileTURN(pe *PeerEndpoint) {
	r := pe.route.Load()
	if r == nil || !r.Is(link.TURN) {
		return
	}
	now := time.Now().UnixNano()
	if now-pe.turnNoticed.Load() < int64(turnNoticeEvery) {
		return
	}
	pe.turnNoticed.Store(now)
	b.events.RelayedWhileTURN(pe.peer)
}

// The transports beside the shared socket, which the control plane opens,
// owns and closes, and the Bind reads (Serve) on goroutines of the control
// plane's: a birthday round's sockets towards one peer, a rendezvous's TCP
// stream, a TURN allocation. WireGuard goes to WireGuard (through side),
// the rest to Events.Control with the transport it came by.

// Serve reads t until it is closed (link.DataPath).
func (b *Bind) Serve(t link.Transport, peer key.Key) {
	r, ok := t.(link.Receiver)
	if !ok {
		return
	}
	var deliver func(pkt []byte, src netip.AddrPort) bool
	switch {
	case peer != key.Key{}:
		deliver = b.fromPeerSocket(t, b.PeerEndpoint(peer))
	case t.Kind() == link.TURN:
		deliver = b.fromTURN(t)
	default: // a relay that frames as the rendezvous does
		deliver = func(frame []byte, src netip.AddrPort) bool {
			if b.fromStream(frame) {
				return true
			}
			b.events.Control(frame, src, t)
			return false
		}
	}
	r.Receive(deliver)
}

// fromPeerSocket takes what comes on t, a socket of pe's peer: WireGuard
// goes to WireGuard, control packets to the control plane, the rest is
// dropped (and counted). It reports false only for control packets: a
// socket that gets anything else carries the peer's traffic.
func (b *Bind) fromPeerSocket(t link.Transport, pe *PeerEndpoint) func(pkt []byte, src netip.AddrPort) bool {
	return func(pkt []byte, src netip.AddrPort) bool {
		switch Classify(pkt) {
		case PacketWireGuard:
			b.inject(pkt, pe)
		case PacketControl, PacketSTUN:
			b.events.Control(pkt, src, t)
			return false
		default:
			b.Dropped.Add(1)
		}
		return true
	}
}

// fromTURN takes what peers send through the allocation t: WireGuard only
// from a peer's relayed address (SetTURNPeers); hellos and probes, sealed,
// to the control plane, which opens them.
func (b *Bind) fromTURN(t link.Transport) func(pkt []byte, src netip.AddrPort) bool {
	return func(pkt []byte, src netip.AddrPort) bool {
		pe := (*b.turnPeers.Load())[src]
		kind := Classify(pkt)
		if kind == PacketControl || kind == PacketRelay && isRelayedControl(pkt) {
			b.events.Control(pkt, src, t)
			return false
		}
		if pe == nil || kind != PacketWireGuard {
			b.Dropped.Add(1)
			return false
		}
		b.relayBytes[link.TURN][rx].Add(uint64(len(pkt)))
		b.inject(pkt, pe)
		b.relayedHandshake(pe, pkt)
		return true
	}
}
