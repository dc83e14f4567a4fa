// Package registration is a peer's side of its registration with one
// rendezvous, as a state machine with no I/O and no clock of its own (like
// nat.Punch): the name is resolved, the peer registers and refreshes,
// backs off while the rendezvous is silent, and reaches it over TCP while
// UDP is blocked. The control plane feeds it events with the time they
// happened and does what Tick says is due; tests drive it with a fake
// clock.
package registration

import (
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
)

const (
	// MinBackoff is the first wait before registering again after a
	// registration went unanswered, and before a refresh's ack is taken
	// for lost.
	MinBackoff = time.Second
	// MaxBackoff spaces registrations to a rendezvous that does not
	// answer: one packet every 5 s costs little, and a rendezvous that
	// comes back has its peers again within 5 s.
	MaxBackoff = 5 * time.Second
	// MaxDialBackoff spaces TCP connection attempts that fail.
	MaxDialBackoff = time.Minute
)

// State is where a registration stands.
type State int

const (
	// Resolving: the rendezvous's name is not resolved yet.
	Resolving State = iota
	// Unregistered: resolved; registering, backing off while it is silent.
	Unregistered
	// Registered: acknowledged; refreshed every wire.RefreshInterval.
	Registered
)

func (s State) String() string {
	return [...]string{"resolving", "unregistered", "registered"}[s]
}

// Due is what Tick found due; the caller does it.
type Due struct {
	Resolve  bool // look the name up (once; report with Resolved)
	Dial     bool // connect over TCP (report with Dialed)
	STUN     bool // ask the rendezvous's STUN over UDP
	Register bool // send a registration, over TCP if the stream is up
	// Lost: a refresh went unanswered; the registration is gone, and the
	// routes through this rendezvous with it.
	Lost bool
}

// Registration is one rendezvous's registration. The zero value is
// Resolving, with nothing sent.
type Registration struct {
	state     State
	resolving bool          // a lookup is under way
	pending   bool          // a registration awaits its ack
	next      time.Time     // when to send the next registration (or STUN)
	backoff   time.Duration // the next wait while unanswered (0: MinBackoff)

	// TCP, while UDP is blocked.
	streamUp    bool
	dialing     bool
	nextDial    time.Time
	dialBackoff time.Duration // the next wait after a failed attempt (0: MinBackoff)
}

// State reports where the registration stands.
func (r *Registration) State() State { return r.state }

// Registered reports whether the rendezvous acknowledged us and has not
// gone silent since.
func (r *Registration) Registered() bool { return r.state == Registered }

// OverTCP reports whether the rendezvous is reached over TCP.
func (r *Registration) OverTCP() bool { return r.streamUp }

// Tick reports what is due at now. udpBlocked: the network was found to
// block UDP, so registrations go over TCP or not at all.
func (r *Registration) Tick(now time.Time, udpBlocked bool) Due {
	var d Due
	if r.state == Resolving {
		if !r.resolving {
			r.resolving, d.Resolve = true, true
		}
		return d
	}
	if udpBlocked && !r.streamUp && !r.dialing && !now.Before(r.nextDial) {
		r.dialing, d.Dial = true, true
	}
	if now.Before(r.next) {
		return d
	}
	if udpBlocked && !r.streamUp {
		// Registering over UDP is pointless; ask STUN whether UDP is back.
		d.STUN = true
		r.next = now.Add(wire.RefreshInterval)
		return d
	}
	if r.pending && r.state == Registered {
		r.state, d.Lost = Unregistered, true
	}
	// Unregistered, STUN tells our public address from the socket
	// WireGuard uses; over TCP, it asks whether UDP works again.
	d.STUN = r.state != Registered || r.streamUp
	d.Register, r.pending = true, true
	if r.state == Registered {
		r.next = now.Add(MinBackoff) // time for the refresh's ack
		return d
	}
	wait := max(r.backoff, MinBackoff)
	r.next, r.backoff = now.Add(wait), min(2*wait, MaxBackoff)
	return d
}

// Resolved: the name resolved; registering starts at the next tick.
func (r *Registration) Resolved() {
	r.resolving = false
	if r.state == Resolving {
		r.state = Unregistered
	}
}

// Acked: the rendezvous acknowledged a registration at now. natChanged:
// what it said of our NAT is out of date, so register again at once. It
// reports whether this made us registered (a refresh's ack does not).
func (r *Registration) Acked(now time.Time, natChanged bool) bool {
	was := r.state == Registered
	r.state, r.pending, r.backoff = Registered, false, 0
	r.next = now.Add(wire.RefreshInterval)
	if natChanged {
		r.next = now
	}
	return !was
}

// RegisterNow asks for a registration at the next tick: our endpoint or
// NAT may have changed. A registration in flight is not taken for the
// rendezvous's silence: its answer may be on the way to our old address.
func (r *Registration) RegisterNow(now time.Time) {
	if r.state != Resolving {
		r.next, r.pending = now, false
	}
}

// Update asks for a registration at the next tick unless one awaits its
// ack (which is followed up when the ack comes, see Acked).
func (r *Registration) Update(now time.Time) {
	if r.state != Resolving && !r.pending {
		r.next = now
	}
}

// Dialed reports the end of a TCP connection attempt; connected: a
// stream is up and the caller keeps it. It reports whether the caller
// should keep it: not if UDP came back meanwhile.
func (r *Registration) Dialed(now time.Time, connected, udpBlocked bool) bool {
	r.dialing = false
	if !connected || !udpBlocked {
		wait := max(r.dialBackoff, MinBackoff)
		r.nextDial, r.dialBackoff = now.Add(wait), min(2*wait, MaxDialBackoff)
		return false
	}
	// Register over the new stream at once, as if for the first time.
	r.streamUp, r.dialBackoff = true, 0
	r.state, r.pending, r.next = Unregistered, false, now
	return true
}

// NextDial is when the next TCP connection attempt may start.
func (r *Registration) NextDial() time.Time { return r.nextDial }

// StreamClosed: the TCP connection ended. It reports whether that lost a
// registration.
func (r *Registration) StreamClosed(now time.Time) (lost bool) {
	r.streamUp = false
	r.nextDial = now.Add(max(r.dialBackoff, MinBackoff))
	if r.state == Registered {
		r.state = Unregistered
		return true
	}
	return false
}
