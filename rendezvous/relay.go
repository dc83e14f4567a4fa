package rendezvous

import (
	"net/netip"
	"sync/atomic"

	"github.com/punchtun/punchtun/rendezvous/wire"
)

// The relay: WireGuard packets between two registered peers that list
// each other, over UDP or their TCP streams, each drop counted by reason.
// The registry decides where frames go (relayRouter); the relays send
// them outside its lock, one by one here, in batches on Linux
// (batchReader).

// relayFrame is a relay frame to forward: its bytes, where it came from,
// and, in a receive batch, datagram msg at off.
type relayFrame struct {
	b        []byte
	src      netip.AddrPort
	msg, off int
	// Set by relayRouter.route: where it goes, or drop, why not.
	to   egress
	dst  netip.AddrPort
	drop *atomic.Uint64
}

// relayRouter decides where relay frames that came in on from go, and
// rewrites each one sent on to name its sender: a batch of them under
// one lock, or one (whose entry, handed to an interface, would be
// allocated per packet).
type relayRouter interface {
	route(from egress, frames []relayFrame)
	routeOne(from egress, src netip.AddrPort, b []byte) (to egress, dst netip.AddrPort, drop *atomic.Uint64)
}

// relays forwards relay frames, if the server relays.
type relays struct {
	on     bool
	stats  *Stats
	routes relayRouter
}

// decide routes frames, or counts them all dropped when the server does
// not relay; it reports whether they were routed.
func (rl *relays) decide(from egress, frames []relayFrame) bool {
	if !rl.on {
		rl.stats.DropRelayOff.Add(uint64(len(frames)))
		return false
	}
	rl.routes.route(from, frames)
	return true
}

// forward relays a WireGuard packet. The sender is whoever is registered
// at the packet's source endpoint; the frame's key names the receiver, and
// is rewritten in place to name the sender.
func (rl *relays) forward(from egress, b []byte, src netip.AddrPort) {
	if !rl.on {
		rl.stats.DropRelayOff.Add(1)
		return
	}
	to, dst, drop := rl.routes.routeOne(from, src, b)
	if drop != nil {
		drop.Add(1)
		return
	}
	to.WriteToUDPAddrPort(b, dst)
	rl.counted(1, uint64(len(b)-wire.RelayHeaderLen))
}

// counted counts packets relayed and their bytes.
func (rl *relays) counted(packets, bytes uint64) {
	rl.stats.RelayPackets.Add(packets)
	rl.stats.RelayBytes.Add(bytes)
}
