package rendezvous

import (
	"net/netip"
	"sync/atomic"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// The relay: WireGuard packets between two registered peers that list
// each other, over UDP or their TCP streams, each drop counted by reason.

// forward relays a WireGuard packet. The sender is whoever is registered
// at the packet's source endpoint; the frame's key names the receiver, and
// is rewritten in place to name the sender.
func (s *Server) forward(l link, b []byte, src netip.AddrPort) {
	if !s.relay {
		s.Stats.DropRelayOff.Add(1)
		return
	}
	s.mu.RLock()
	sender, to, dst, drop := s.relayTarget(l, src, b)
	s.mu.RUnlock()
	if drop != nil {
		drop.Add(1)
		return
	}
	copy(b[len(wire.RelayMagic):], sender[:])
	to.WriteToUDPAddrPort(b, dst)
	s.Stats.RelayPackets.Add(1)
	s.Stats.RelayBytes.Add(uint64(len(b) - wire.RelayHeaderLen))
}

// relayTarget decides where a relay frame from src on l goes: the sender
// must be registered at src and it and the receiver the frame names must
// list each other. It returns the sender and the receiver's link and
// address, or the counter of the reason to drop the frame. Callers hold
// s.mu (read).
func (s *Server) relayTarget(l link, src netip.AddrPort, b []byte) (sender key.Key, to link, dst netip.AddrPort, drop *atomic.Uint64) {
	sender, registered := s.byEndpoint[source{l, src}]
	if !registered {
		return sender, nil, dst, &s.Stats.DropUnregistered
	}
	receiver, _, err := wire.ParseRelay(b)
	if err != nil {
		return sender, nil, dst, &s.Stats.DropMalformed
	}
	_, r, ok := s.mutual(sender, receiver)
	if !ok {
		return sender, nil, dst, &s.Stats.DropNotMutual
	}
	return sender, r.link, r.endpoint, nil
}
