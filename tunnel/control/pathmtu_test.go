package control

import (
	"net/netip"
	"testing"

	"github.com/punchtun/punchtun/rendezvous/wire"
)

// TestInnerMTUFitsPadding: a packet of the route MTU innerMTU gives, padded
// by WireGuard to a multiple of 16 and sealed, fits the path: WireGuard pads
// up to the interface's MTU, which is above the route's.
func TestInnerMTUFitsPadding(t *testing.T) {
	v4, v6 := netip.MustParseAddr("203.0.113.22"), netip.MustParseAddr("2001:db8::22")
	for _, tc := range []struct {
		path    int
		dst     netip.Addr
		relayed bool
		want    int
	}{
		{1300, v4, false, 1232}, // 1240 padded to 1248 made 1308-byte datagrams
		{1200, v4, false, 1136},
		{1280, v6, false, 1200},
		{1300, v4, true, 1200},
		{1340, v4, false, 1280},
	} {
		got := innerMTU(tc.path, tc.dst, tc.relayed)
		if got != tc.want {
			t.Errorf("innerMTU(%d, %v, relayed %v) = %d, want %d", tc.path, tc.dst, tc.relayed, got, tc.want)
		}
		header := 20 + 8 + wireGuardOverhead
		if tc.dst.Is6() {
			header = 40 + 8 + wireGuardOverhead
		}
		if tc.relayed {
			header += wire.RelayHeaderLen
		}
		if padded := (got + 15) &^ 15; padded+header > tc.path {
			t.Errorf("path %d: a %d-byte packet padded to %d makes a %d-byte datagram", tc.path, got, padded, padded+header)
		}
	}
}
