package wire

// TimeOf is b's Time, the replay protection of every body sent to or by
// the rendezvous; 0 for those without one (Ping, Pong). Peer and
// rendezvous both read it here, so that a new message type needs adding
// in one place.
func TimeOf(b Body) uint64 {
	switch m := b.(type) {
	case *Register:
		return m.Time
	case *RegisterAck:
		return m.Time
	case *Query:
		return m.Time
	case *Intro:
		return m.Time
	case *Deregister:
		return m.Time
	case *TURNOffer:
		return m.Time
	case *Relayed:
		return m.Time
	case *Lookup:
		return m.Time
	case *LookupMiss:
		return m.Time
	case *Refused:
		return m.Time
	case *Publish:
		return m.Time
	case *Document:
		return m.Time
	}
	return 0
}
