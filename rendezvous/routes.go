package rendezvous

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Routes: which pairs the registry introduces and relays for — peers that
// list each other, or members of one network — and where a relay frame
// or a TURN relayed address goes.

// mutual returns the registrations of a and b if both are registered and
// each lists the other, or both are members of one network: the pairs the
// server introduces and relays for. Callers hold r.mu.
func (r *registry) mutual(a, b key.Key) (ra, rb *peerRecord, ok bool) {
	ra, rb = r.peers[a], r.peers[b]
	if ra == nil || rb == nil {
		return nil, nil, false
	}
	_, aWants := ra.wants[b]
	_, bWants := rb.wants[a]
	return ra, rb, aWants && bWants || sameNetwork(ra, rb)
}

// query introduces asker and target if both are registered and each lists
// the other. Otherwise it stays silent: a stranger who knows a public key
// learns nothing, not even whether that key is registered. Callers hold
// r.mu.
func (r *registry) query(asker, target key.Key, out *outgoing) {
	a, b, ok := r.mutual(asker, target)
	if !ok {
		r.stats.DropNotMutual.Add(1)
		return
	}
	r.intros.introduce(asker, a, target, b, out)
}

// passRelayed tells m.Peer where a TURN server relays to sender, if the two
// are mutually configured and this rendezvous hands out TURN servers.
// Callers hold r.mu.
func (r *registry) passRelayed(sender key.Key, m *wire.Relayed, out *outgoing) {
	if !r.turn.enabled() {
		r.stats.DropRelayOff.Add(1)
		return
	}
	_, to, ok := r.mutual(sender, m.Peer)
	if !ok {
		r.stats.DropNotMutual.Add(1)
		return
	}
	out.add(to.destination, &wire.Relayed{Time: r.clock.stamp(time.Now()), Peer: sender, Addr: m.Addr})
	r.stats.RelayedAddresses.Add(1)
}

// route decides where each relay frame that came in on from goes, under
// one read lock for them all, and names the sender in each frame to be
// sent on (relayRouter). A registration, which takes the write lock,
// waits for one batch's lookups at most, and a waiting writer holds off
// further readers: relayed traffic cannot starve control.
func (r *registry) route(from egress, frames []relayFrame) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	// Frames of one batch mostly come from one peer to one peer: decide
	// once for a run of them.
	var (
		have          bool
		src           netip.AddrPort
		receiver, snd key.Key
		to            egress
		dst           netip.AddrPort
		drop          *atomic.Uint64
	)
	for i := range frames {
		f := &frames[i]
		k, _, _ := wire.ParseRelay(f.b) // relayTarget drops a short frame
		if !have || f.src != src || k != receiver {
			snd, to, dst, drop = r.relayTarget(from, f.src, f.b)
			have, src, receiver = true, f.src, k
		}
		f.to, f.dst, f.drop = to, dst, drop
		if drop == nil {
			copy(f.b[len(wire.RelayMagic):], snd[:])
		}
	}
}

// routeOne is route for one frame.
func (r *registry) routeOne(from egress, src netip.AddrPort, b []byte) (to egress, dst netip.AddrPort, drop *atomic.Uint64) {
	r.mu.RLock()
	sender, to, dst, drop := r.relayTarget(from, src, b)
	r.mu.RUnlock()
	if drop == nil {
		copy(b[len(wire.RelayMagic):], sender[:])
	}
	return to, dst, drop
}

// relayTarget decides where a relay frame from src on from goes: the
// sender must be registered at src and it and the receiver the frame
// names must list each other. It returns the sender and the receiver's
// egress and address, or the counter of the reason to drop the frame.
// Callers hold r.mu (read).
func (r *registry) relayTarget(from egress, src netip.AddrPort, b []byte) (sender key.Key, to egress, dst netip.AddrPort, drop *atomic.Uint64) {
	sender, registered := r.byEndpoint[source{from, src}]
	if !registered {
		return sender, nil, dst, &r.stats.DropUnregistered
	}
	receiver, _, err := wire.ParseRelay(b)
	if err != nil {
		return sender, nil, dst, &r.stats.DropMalformed
	}
	_, to2, ok := r.mutual(sender, receiver)
	if !ok {
		return sender, nil, dst, &r.stats.DropNotMutual
	}
	return sender, to2.egress, to2.endpoint, nil
}
