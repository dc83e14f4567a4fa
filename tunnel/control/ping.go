package control

// `punchtun ping PEER`: a probe over the tunnel's control path, the sealed
// wire.Ping the control plane punches and keeps paths with, sent on the
// peer's current route — to the peer's endpoint, or wrapped for the relay —
// and its wire.Pong, timed (Control.Ping).

import (
	"crypto/rand"
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
// and a pong counts only for the peer it was sent to (and so the control
// plane: each peer is one control plane's).
var probes sync.Map // [12]byte → *probeWait

// probe sends p a probe on its current route, on the control goroutine.
// The pong arrives through probeAnswered.
func (p *peer) probe() (*probeWait, link.Route, error) {
	r := p.ep.Route()
	if !r.Dst.IsValid() {
		return nil, r, fmt.Errorf("no path to %s yet (%s)", p.label(), p.path)
	}
	w := &probeWait{peer: p, sent: p.deps.clock.Now(), done: make(chan probeResult, 1)}
	rand.Read(w.tx[:])
	probes.Store(w.tx, w)
	m := &wire.Ping{TxID: w.tx}
	if r.Relayed() {
		p.sendRelayedProbe(r, m)
	} else {
		p.sendVia(r.Via, r.Dst, m)
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
	if w.peer != p {
		return false
	}
	probes.Delete(pong.TxID)
	path := nat.KindOf(m.src).String()
	switch {
	case m.came(link.RelayTCP):
		path = "relay-tcp"
	case wire.IsRelay(m.pkt):
		path = "relay"
	}
	w.done <- probeResult{at: m.at, from: m.src, path: path}
	return true
}

// sendRelayedProbe seals m for p and sends it the relayed way r says: in a
// relay frame to the rendezvous at r.Dst (over UDP or its TCP stream), or
// through our TURN allocation to the peer's relayed address.
func (p *peer) sendRelayedProbe(r link.Route, m wire.Body) {
	d := p.deps
	sealed := wire.Seal(make([]byte, 0, wire.Overhead+64), m.Type(), d.pub, &p.shared, m.Append(nil))
	if r.Is(link.TURN) {
		// Framed as for a rendezvous, so that the other side tells it
		// from a direct probe from the same address.
		sealed = wire.AppendRelay(nil, d.pub, sealed)
	}
	if err := r.Via.Send([][]byte{sealed}, p.key, r.Dst); err != nil {
		d.log.Debug("relayed probe not sent", "peer", p.label(), "relay", r.Dst, "err", err)
	}
}
