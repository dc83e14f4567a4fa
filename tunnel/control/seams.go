package control

import (
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// What the control plane asks of the world outside it — the WireGuard
// device, the host's network and the clock — each a small interface that
// its tests fake. The data path's is tunnel/link's.

// WireGuard is what the control plane asks of the WireGuard device.
type WireGuard interface {
	// Repoint makes WireGuard send to the peer's endpoint again, in case
	// its roaming followed a packet elsewhere.
	Repoint(peer key.Key) error
	// HandshakeIfNone starts a handshake with the peer unless WireGuard
	// has had one: a process that restarted has no session while the
	// peer holds the old one, whose packets it cannot read, and nobody
	// would start a new one until the peer's 15 s timeout.
	HandshakeIfNone(peer key.Key)
	// SetPeerMTU routes the peer's AllowedIPs with an MTU of mtu (0: the
	// interface's).
	SetPeerMTU(peer key.Key, mtu int) error
	// Rehandshake starts a new handshake with the peer now, whatever
	// session WireGuard holds (after a resume, it is one the peer forgot).
	Rehandshake(peer key.Key)
	// AddMember adds a member to WireGuard, or replaces its AllowedIPs,
	// keeping its session; RemoveMember takes it out.
	AddMember(peer key.Key, allowed []netip.Prefix) error
	RemoveMember(peer key.Key) error
}

// Host is what the control plane asks of the host's network.
type Host interface {
	// PathMTU is the path MTU the kernel knows for dst on the route our
	// sockets (marked with mark) take; 0 if none below the links'.
	PathMTU(dst netip.Addr, mark uint32) int
	// WatchNetwork signals changed (without blocking) whenever the host
	// gains or loses an address or a default route, until done closes.
	WatchNetwork(done <-chan struct{}, changed chan<- struct{})
}

// memberWireGuard is WireGuard's list of members.
type memberWireGuard interface {
	AddMember(peer key.Key, allowed []netip.Prefix) error
	RemoveMember(peer key.Key) error
}

// destinations is the data path's list of addresses a peer holds, which
// it holds packets to until one does.
type destinations interface {
	AddDestinations(addrs []netip.Addr)
	RemoveDestinations(addrs []netip.Addr)
}

// clock tells the control plane the time: the system's (New), or a
// test's fake one. Every time the control plane acts on comes from it,
// read where an event enters (the control goroutine, a packet queued, a
// helper's outcome) and handed down to the components as now.
type clock interface{ Now() time.Time }

// clockFunc is a clock of a function, such as time.Now.
type clockFunc func() time.Time

func (f clockFunc) Now() time.Time { return f() }
