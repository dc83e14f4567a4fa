package control

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/transport"
	"github.com/punchtun/punchtun/tunnel/turnrelay"
)

// Relaying through TURN servers (coturn, say) that a rendezvous hands out.
// When a rendezvous offers TURN servers and some peer has no direct path,
// we allocate a relayed address on the first server that grants one (UDP
// servers first; only TCP and TLS ones while UDP is blocked), tell each
// such peer our relayed address through the rendezvous, and, once we know
// the peer's, send WireGuard to it through our allocation. A TURN route
// ranks below a direct path and above the rendezvous's own relay; like
// that relay it is left the moment probes confirm a direct path.
//
// Data does not go from allocation to allocation: a TURN server's relay
// sockets have small receive buffers (coturn's take 128 KiB, a burst of
// some fifty packets), and bulk traffic into one overflows them. Instead
// each side sends a hello from its shared socket to the other's relayed
// address now and then, which opens its own NAT to that address; the other
// side learns from the hello where its relay reaches us (turnSeen), and
// sends there through its allocation: packets leave the server's relay
// socket straight for our NAT and arrive on our shared socket, batched like
// any other. A peer that cannot send UDP (it talks to the TURN server over
// TCP) sends no hello; packets to it go to its relayed address.
//
// One allocation serves every peer: the server keeps a permission per
// peer address. It is released when no peer has needed a relay for
// turnIdle, and made anew with fresh credentials before its own expire,
// since a TURN server refuses to refresh an allocation once the
// credentials' time has passed.

// turnRelay is the control plane's side of TURN, owned by the control
// goroutine like the rest of the control plane's state.
type turnRelay struct {
	host    turnHost
	clock   clock // the control plane's
	log     *slog.Logger
	peers   map[key.Key]*peer // the control plane's
	data    link.DataPath     // reads the allocation, and learns the peers' relayed addresses
	ctx     context.Context   // bounds an allocation under way
	mark    uint32            // of the allocation's socket
	dropped *atomic.Uint64    // the control plane's count of packets dropped
	offer   *wire.TURNOffer   // the newest credentials, from any rendezvous
	alloc   *transport.TURN
	expires time.Time // of the credentials alloc was made with
	since   time.Time // when alloc was made
	pending bool      // an allocation is under way
	retryAt time.Time // after a failure
	backoff time.Duration
	// needed is when some peer last had no direct path.
	needed time.Time
	// A path that falls silent is checked with probes through the
	// allocation (check): the one awaited, when the check began, and
	// when the next probe leaves.
	probe                              [12]byte
	probePeer                          *peer
	checkSince, lastCheck, nextProbeAt time.Time
}

// turnHost is what the TURN relay asks of the control plane: work on a
// helper goroutine and back on the control goroutine, whether UDP is
// blocked, and the control messages it seals, opens and sends.
type turnHost interface {
	spawn(f func())
	post(f func()) bool
	udpBlocked() bool
	sendSealed(dst netip.AddrPort, shared *wire.SharedKey, m wire.Body)
	open(pkt []byte, h wire.Header, shared *wire.SharedKey) (wire.Body, bool)
	// sendRegistered sends every registered rendezvous what build makes
	// with a fresh stamp.
	sendRegistered(build func(stamp uint64) wire.Body)
}

const (
	minTURNBackoff = 10 * time.Second
	maxTURNBackoff = 5 * time.Minute
	// turnIdle: an allocation no peer needed for this long is released.
	turnIdle = 2 * time.Minute
	// turnResend spaces resending our relayed address to a peer that has
	// not answered with its own.
	turnResend = 2 * time.Second
	// turnHelloInterval spaces the hellos that keep our NAT open to a
	// peer's relayed address: well within the shortest UDP timeouts.
	turnHelloInterval = 10 * time.Second
	// A silent TURN route is probed every turnProbeInterval; with no
	// answer for turnProbeTimeout the allocation is taken for dead.
	turnProbeInterval = 500 * time.Millisecond
	turnProbeTimeout  = 3 * time.Second
	// turnOKFor: after an answered probe, how long a peer's relayed
	// packets do not start another check.
	turnOKFor = 10 * time.Second
)

// backOff follows a failed or dead allocation: the next is tried after a
// backoff that doubles, from minTURNBackoff to maxTURNBackoff.
func (t *turnRelay) backOff(now time.Time) {
	t.backoff = min(max(2*t.backoff, minTURNBackoff), maxTURNBackoff)
	t.retryAt = now.Add(t.backoff)
}

// onOffer keeps the newest credentials.
func (t *turnRelay) onOffer(o *wire.TURNOffer, now time.Time) {
	if len(o.URIs) == 0 {
		return
	}
	if t.offer == nil || o.Expires >= t.offer.Expires {
		t.offer = o
	}
	t.tick(now)
}

// onRelayed learns where a TURN server relays to a peer.
func (t *turnRelay) onRelayed(m *wire.Relayed, now time.Time) {
	p := t.peers[m.Peer]
	if p == nil {
		t.dropped.Add(1)
		return
	}
	if m.Addr == p.turn.addr {
		return
	}
	t.log.Info("the peer's TURN relayed address", "peer", p.label(), "relayed", m.Addr)
	p.turn.addr, p.turn.helloAt = m.Addr, time.Time{}
	if m.Addr.IsValid() {
		// What the peer's relay sends to our shared socket comes from
		// there.
		p.ep.Learn(m.Addr)
	}
	// It allocated anew (or restarted): it may not know ours.
	p.turn.sent, p.turn.nextSend = netip.AddrPort{}, time.Time{}
	t.setPeers()
	t.permit(p)
	p.updateRoute(now, "the peer's TURN relayed address arrived")
	t.tick(now)
}

// tick allocates, renews or releases, and tells peers our relayed
// address.
func (t *turnRelay) tick(now time.Time) {
	if t.offer == nil {
		return
	}
	need := false
	for _, p := range t.peers {
		if r := p.ep.Route(); r.Is(link.TURN) && now.Before(p.turn.checkUntil) {
			t.check(p, r, now)
		}
		if p.needsRelay() {
			need = true
			t.announce(p, now)
			t.hello(p, now)
		}
	}
	if need {
		t.needed = now
	}
	switch {
	case t.pending || now.Before(t.retryAt):
	case t.alloc != nil && !need && now.Sub(t.needed) > turnIdle:
		t.log.Info("releasing the TURN allocation: no peer needs a relay", "server", t.alloc.URI())
		t.close(now, "no peer needs a relay")
	case t.alloc != nil:
		// Renew once a quarter of the credentials' life is left, with
		// fresher ones.
		left, life := t.expires.Sub(now), t.expires.Sub(t.since)
		if left < life/4 && time.Unix(int64(t.offer.Expires), 0).After(t.expires) {
			t.allocate()
		}
	case need && time.Unix(int64(t.offer.Expires), 0).After(now):
		t.allocate()
	}
}

// allocate allocates on a helper goroutine; allocated follows.
func (t *turnRelay) allocate() {
	t.pending = true
	offer, blocked, mark := t.offer, t.host.udpBlocked(), t.mark
	t.host.spawn(func() {
		a, err := allocateFirst(t.ctx, t.log, offer, blocked, mark)
		if !t.host.post(func() { t.allocated(a, err, offer) }) && a != nil {
			a.Close()
		}
	})
}

// allocateFirst tries the offer's servers in turn: UDP ones first, and
// only TCP and TLS ones while UDP is blocked. It runs on a helper, until
// ctx ends.
func allocateFirst(ctx context.Context, log *slog.Logger, offer *wire.TURNOffer, blocked bool, mark uint32) (*turnrelay.Allocation, error) {
	uris := slices.Clone(offer.URIs)
	udp := func(u string) bool { return strings.HasPrefix(u, "turn:") && !strings.Contains(u, "transport=tcp") }
	slices.SortStableFunc(uris, func(a, b string) int {
		switch {
		case udp(a) == udp(b):
			return 0
		case udp(a):
			return -1
		}
		return 1
	})
	var errs []string
	for _, u := range uris {
		if blocked && udp(u) {
			continue
		}
		a, err := turnrelay.Allocate(ctx, turnrelay.Config{URI: u, Username: offer.Username, Password: offer.Password,
			Control: markSocket(mark), Log: log})
		if err == nil {
			return a, nil
		}
		errs = append(errs, err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, errors.New("no TURN server reachable over TCP, and UDP is blocked")
	}
	return nil, errors.New(strings.Join(errs, "; "))
}

// allocated follows an allocation's end: it replaces the last one and
// carries every peer that can use it.
func (t *turnRelay) allocated(a *turnrelay.Allocation, err error, offer *wire.TURNOffer) {
	now := t.clock.Now()
	t.pending = false
	if err != nil {
		t.backOff(now)
		t.log.Warn("cannot allocate a TURN relay: relaying through the rendezvous where it relays", "err", err, "retry_in", t.backoff)
		return
	}
	old, ta := t.alloc, transport.NewTURN(a)
	t.alloc, t.expires, t.since, t.backoff = ta, time.Unix(int64(offer.Expires), 0), now, 0
	t.log.Info("TURN relay allocated", "server", a.URI(), "relayed", a.Addr(), "credentials_expire", t.expires.UTC().Format(time.RFC3339))
	t.host.spawn(func() { t.data.Serve(ta, key.Key{}) })
	for _, p := range t.peers {
		p.turn.sent, p.turn.nextSend, p.turn.seen = netip.AddrPort{}, time.Time{}, netip.AddrPort{}
		t.permit(p)
		if p.ep.Route().Is(link.TURN) || p.needsRelay() {
			p.updateRoute(now, "TURN relay allocated")
		}
	}
	if old != nil {
		old.Close()
	}
	t.tick(now)
}

// close releases the allocation; peers on it move to the next best
// route.
func (t *turnRelay) close(now time.Time, why string) {
	a := t.alloc
	if a == nil {
		return
	}
	t.alloc = nil
	for _, p := range t.peers {
		p.turn.sent, p.turn.seen = netip.AddrPort{}, netip.AddrPort{}
		if p.ep.Route().Via == link.Transport(a) {
			p.updateRoute(now, why)
		}
	}
	a.Close() // its reader ends
}

// check follows silence on p's TURN route: a tunnel that just went idle
// looks the same as a dead server, so it probes p through the allocation
// and, with no answer within turnProbeTimeout, leaves the allocation,
// trying a new one after the backoff.
func (t *turnRelay) check(p *peer, r link.Route, now time.Time) {
	if t.checkSince.IsZero() || now.Sub(t.lastCheck) > time.Second {
		t.checkSince = now // the last check ended: the path was heard again
	}
	t.lastCheck = now
	if now.Sub(t.checkSince) > turnProbeTimeout {
		t.checkSince = time.Time{}
		t.backOff(now)
		t.log.Warn("no answer through the TURN relay: leaving it", "peer", p.label(), "server", p.relayName(r), "retry_in", t.backoff)
		t.close(now, "no answer through the TURN relay")
		return
	}
	if now.Before(t.nextProbeAt) {
		return
	}
	t.nextProbeAt = now.Add(turnProbeInterval)
	t.probePeer = p
	rand.Read(t.probe[:])
	p.sendRelayedProbe(r, &wire.Ping{TxID: t.probe})
}

// answered takes a pong that came through the allocation: an answer to
// check's probe ends the check.
func (t *turnRelay) answered(pong *wire.Pong, now time.Time) bool {
	if t.checkSince.IsZero() || pong.TxID != t.probe {
		return false
	}
	t.checkSince = time.Time{}
	if p := t.probePeer; p != nil {
		// The path works: the peer's relayed packets alone do not make
		// us probe it again for a while.
		p.turn.okUntil, p.turn.checkUntil = now.Add(turnOKFor), time.Time{}
	}
	return true
}

// announce tells p, through every rendezvous, our relayed address, until
// p's own arrives.
func (t *turnRelay) announce(p *peer, now time.Time) {
	a := t.alloc
	if a == nil || (p.turn.sent == a.Addr() && (p.turn.addr.IsValid() || now.Before(p.turn.nextSend))) {
		return
	}
	t.host.sendRegistered(func(stamp uint64) wire.Body { return &wire.Relayed{Time: stamp, Peer: p.key, Addr: a.Addr()} })
	p.turn.sent, p.turn.nextSend = a.Addr(), now.Add(turnResend)
}

// hello sends p's relayed address a hello from our shared socket, every
// turnHelloInterval: it opens our NAT to that address, and tells the peer
// where its relay reaches us (onHello).
func (t *turnRelay) hello(p *peer, now time.Time) {
	if !p.turn.addr.IsValid() || now.Before(p.turn.helloAt) || t.host.udpBlocked() {
		return
	}
	p.turn.helloAt = now.Add(turnHelloInterval)
	var tx [12]byte
	rand.Read(tx[:])
	t.host.sendSealed(p.turn.addr, &p.shared, &wire.Ping{TxID: tx})
}

// onHello takes a peer's message that came through our allocation: a
// hello, from where our relay reaches the peer.
func (t *turnRelay) onHello(p *peer, h wire.Header, m inbound) {
	if _, ok := t.host.open(m.pkt, h, &p.shared); !ok || t.alloc == nil || m.via != link.Transport(t.alloc) {
		return
	}
	if p.turn.seen != m.src {
		p.turn.seen = m.src
		p.updateRoute(m.at, "the peer's NAT is open to our TURN relay")
	}
}

// permit opens our allocation to p: to its relayed address, and to its
// public addresses, where its hellos come from. On a helper: the request
// waits for the server's answer.
func (t *turnRelay) permit(p *peer) {
	a := t.alloc
	if a == nil {
		return
	}
	addrs := []netip.AddrPort{p.turn.addr}
	for _, ep := range p.observed {
		addrs = append(addrs, ep)
	}
	t.host.spawn(func() {
		for _, addr := range addrs {
			if !addr.IsValid() {
				continue
			}
			if err := a.Permit(addr); err != nil {
				t.log.Debug("TURN permission failed", "server", a.URI(), "peer", addr, "err", err)
			}
		}
	})
}

// setPeers tells the data path the peers' relayed addresses: what comes
// through the allocation from there is theirs.
func (t *turnRelay) setPeers() {
	m := make(map[netip.AddrPort]key.Key)
	for _, p := range t.peers {
		if p.turn.addr.IsValid() {
			m[p.turn.addr] = p.key
		}
	}
	t.data.SetTURNPeers(m)
}

// active reports whether there is an allocation.
func (t *turnRelay) active() bool { return t.alloc != nil }

// route is p's route through our allocation, if there is one: to where
// our relay reaches the peer's NAT, else to the peer's relayed address.
func (t *turnRelay) route(p *peer) (link.Route, bool) {
	switch {
	case t.alloc == nil:
		return link.Route{}, false
	case p.turn.seen.IsValid():
		return link.Route{Dst: p.turn.seen, Via: t.alloc}, true
	case p.turn.addr.IsValid():
		return link.Route{Dst: p.turn.addr, Via: t.alloc}, true
	}
	return link.Route{}, false
}

// peerLeft follows the data path's word that p sends through a
// rendezvous's relay while our route to it is TURN: p's TURN route is
// checked with probes (check) for a while, unless one was answered
// lately.
func (t *turnRelay) peerLeft(p *peer, now time.Time) {
	if !p.ep.Route().Is(link.TURN) || now.Before(p.turn.okUntil) {
		return
	}
	p.turn.checkUntil = now.Add(turnProbeTimeout + time.Second)
}
