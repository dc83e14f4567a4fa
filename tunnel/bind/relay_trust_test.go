package bind

import (
	"net/netip"
	"testing"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// TestRelayCarriesOnlyWireGuard: what a rendezvous relays reaches
// WireGuard only if it came from a rendezvous we registered with, names a
// peer of ours and carries a WireGuard packet, which WireGuard then
// authenticates by the peer's key. A lying relay can drop packets, not
// inject control messages or anything else.
func TestRelayCarriesOnlyWireGuard(t *testing.T) {
	b := New(key.Key{}, link.Discard)
	peer, stranger := key.Key{1}, key.Key{2}
	pe := b.PeerEndpoint(peer)
	relay := netip.MustParseAddrPort("203.0.113.10:3478")
	other := netip.MustParseAddrPort("203.0.113.99:3478")
	b.SetRelays([]netip.AddrPort{relay})

	wg := []byte{4, 0, 0, 0, 1, 2, 3, 4}
	var k key.Key
	shared := wire.NewSharedKey(key.Private{}, k)
	control := wire.Seal(nil, wire.TypePong, peer, &shared, (&wire.Pong{}).Append(nil))
	_, stun := nat.NewBindingRequest()
	for _, tc := range []struct {
		name  string
		frame []byte
		src   netip.AddrPort
		want  *PeerEndpoint
	}{
		{"WireGuard from our relay", wire.AppendRelay(nil, peer, wg), relay, pe},
		{"from another address", wire.AppendRelay(nil, peer, wg), other, nil},
		{"for a key that is not our peer", wire.AppendRelay(nil, stranger, wg), relay, nil},
		{"a control message inside", wire.AppendRelay(nil, peer, control), relay, nil},
		{"STUN inside", wire.AppendRelay(nil, peer, stun), relay, nil},
		{"empty inside", wire.AppendRelay(nil, peer, nil), relay, nil},
	} {
		if got := b.unwrapRelay(tc.frame, tc.src); got != tc.want {
			t.Errorf("%s: endpoint %v, want %v", tc.name, got, tc.want)
		}
	}
	// Over a TCP stream, the same rules but the source: WireGuard from a
	// peer of ours goes to WireGuard, a relayed probe to the control plane
	// (fromStream says false), anything else is dropped and counted.
	for _, tc := range []struct {
		name     string
		frame    []byte
		taken    bool // fromStream's answer
		dropped  uint64
		injected int
	}{
		{"WireGuard from a peer", wire.AppendRelay(nil, peer, wg), true, 0, 1},
		{"a control message inside", wire.AppendRelay(nil, peer, control), false, 0, 0},
		{"WireGuard for a key that is not our peer", wire.AppendRelay(nil, stranger, wg), true, 1, 0},
		{"STUN inside", wire.AppendRelay(nil, peer, stun), true, 1, 0},
		{"not a relay frame", wg, false, 0, 0},
		{"a relay header cut short", wire.AppendRelay(nil, peer, nil)[:wire.RelayHeaderLen-1], false, 0, 0},
	} {
		dropped := b.Dropped.Load()
		if got := b.fromStream(tc.frame); got != tc.taken {
			t.Errorf("%s over TCP: fromStream = %v, want %v", tc.name, got, tc.taken)
		}
		if d := b.Dropped.Load() - dropped; d != tc.dropped {
			t.Errorf("%s over TCP: %d dropped, want %d", tc.name, d, tc.dropped)
		}
		if n := len(b.side); n != tc.injected {
			t.Errorf("%s over TCP: %d packets passed to WireGuard, want %d", tc.name, n, tc.injected)
		}
		for len(b.side) > 0 {
			<-b.side
		}
	}
}
