package control

// `punchtun ping PEER`: a probe over the tunnel's control path, the sealed
// wire.Ping the control plane punches and keeps paths with, sent on the
// peer's current route — to the peer's endpoint, or wrapped for the relay —
// and its wire.Pong, timed (Control.Ping).

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/tunnel/link"
)

// probeWait is a probe in flight, keyed by its TxID in probes.
type probeWait struct {
	c    *Control
	peer *peer
	tx   [12]byte
	sent time.Time
	done chan probeResult
}

type probeResult struct {
	at   time.Time
	from netip.AddrPort
	path string
}

// probes holds the probes of every interface in flight: TxIDs are random,
// and a pong counts only for the control plane and peer it was sent to.
var probes sync.Map // [12]byte → *probeWait

// probe sends p a probe on its current route, on the control goroutine.
// The pong arrives through probeAnswered.
func (p *peer) probe() (*probeWait, link.Route, error) {
	r := p.ep.Route()
	if !r.Dst.IsValid() {
		return nil, r, fmt.Errorf("no path to %s yet (%s)", p.label(), p.path)
	}
	w := &probeWait{c: p.c, peer: p, sent: p.c.clock.Now(), done: make(chan probeResult, 1)}
	rand.Read(w.tx[:])
	probes.Store(w.tx, w)
	m := &wire.Ping{TxID: w.tx}
	switch {
	case r.Relay:
		p.sendRelayedProbe(r, m)
	case r.Socket != nil:
		p.sendVia(r.Socket, r.Dst, m)
	default:
		p.c.sendSealed(r.Dst, &p.shared, m)
	}
	return w, r, nil
}

// probeAnswered takes a pong from p, which came in m, if it answers a
// probe of ours; it reports whether it did, and then the pong is not the
// Punch's.
func (p *peer) probeAnswered(m inbound, pong *wire.Pong) bool {
	v, ok := probes.Load(pong.TxID)
	if !ok {
		return false
	}
	w := v.(*probeWait)
	if w.c != p.c || w.peer != p {
		return false
	}
	probes.Delete(pong.TxID)
	path := nat.KindOf(m.src).String()
	switch {
	case m.tcp:
		path = "relay-tcp"
	case wire.IsRelay(m.pkt):
		path = "relay"
	}
	w.done <- probeResult{at: m.at, from: m.src, path: path}
	return true
}

// handleRelayedProbe takes what a relay frame from p carries instead of
// WireGuard — inner, sealed by p, whose header is h: a probe or a pong
// that came through a rendezvous or a TURN relay. A probe is answered the
// way it came.
func (p *peer) handleRelayedProbe(h wire.Header, inner []byte, m inbound) {
	c := p.c
	body, ok := c.open(inner, h, &p.shared)
	if !ok {
		return
	}
	switch b := body.(type) {
	case *wire.Ping:
		var stream *wire.Stream
		if m.tcp {
			for _, s := range c.servers {
				if s.addr == m.src && s.stream != nil {
					stream = s.stream
				}
			}
			if stream == nil {
				c.Dropped.Add(1)
				return
			}
		}
		reply := link.Route{Dst: m.src, Stream: stream, TURN: m.turn}
		if !m.tcp && m.turn == nil && !c.isServer(m.src) {
			// From the peer's TURN relay, to our shared socket: the
			// answer goes back through our own allocation (turn.go).
			if reply = p.ep.Route(); reply.TURN == nil {
				c.Dropped.Add(1)
				return
			}
		}
		p.sendRelayedProbe(reply, &wire.Pong{TxID: b.TxID, Src: m.src})
	case *wire.Pong:
		if !p.probeAnswered(m, b) && !c.turn.answered(b, m.at) {
			c.Dropped.Add(1)
		}
	default:
		c.Dropped.Add(1)
	}
}

// sendRelayedProbe seals m for p and sends it the relayed way r says: in a
// relay frame to the rendezvous at r.Dst, over r.Stream if set, or
// through our TURN allocation to the peer's relayed address.
func (p *peer) sendRelayedProbe(r link.Route, m wire.Body) {
	c := p.c
	sealed := wire.Seal(make([]byte, 0, wire.Overhead+64), m.Type(), c.pub, &p.shared, m.Append(nil))
	var err error
	switch {
	case r.Stream != nil:
		err = r.Stream.WriteRelayed(p.key, [][]byte{sealed})
	case r.TURN != nil:
		// Framed as for a rendezvous, so that the other side tells it
		// from a direct probe from the same address.
		if !r.TURN.Send(wire.AppendRelay(nil, c.pub, sealed), r.Dst) {
			err = errors.New("TURN send queue full")
		}
	default:
		err = c.data.SendTo(wire.AppendRelay(make([]byte, 0, wire.RelayHeaderLen+len(sealed)), p.key, sealed), r.Dst)
	}
	if err != nil {
		c.log.Debug("relayed probe not sent", "peer", p.label(), "relay", r.Dst, "err", err)
	}
}
