package tunnel

import (
	"net/netip"
	"testing"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/tunnel/key"
)

// TestRelayCarriesOnlyWireGuard: what a rendezvous relays reaches
// WireGuard only if it came from a rendezvous we registered with, names a
// peer of ours and carries a WireGuard packet, which WireGuard then
// authenticates by the peer's key. A lying relay can drop packets, not
// inject control messages or anything else.
func TestRelayCarriesOnlyWireGuard(t *testing.T) {
	b := NewBind(func([]byte, netip.AddrPort) {})
	peer, stranger := key.Key{1}, key.Key{2}
	pe := b.PeerEndpoint(peer)
	relay := netip.MustParseAddrPort("203.0.113.10:3478")
	other := netip.MustParseAddrPort("203.0.113.99:3478")
	b.SetRelays([]netip.AddrPort{relay})

	wg := []byte{4, 0, 0, 0, 1, 2, 3, 4}
	var k key.Key
	shared := wire.NewSharedKey(k, k)
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
	// Over a TCP stream, the same rules but the source.
	if b.InjectRelayed(wire.AppendRelay(nil, peer, control)) && b.Dropped.Load() != 1 {
		t.Errorf("a control message relayed over TCP was not dropped")
	}
}
