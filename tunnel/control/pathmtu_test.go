package control

import (
	"net/netip"
	"testing"

	"github.com/punchtun/punchtun/rendezvous/wire"
)

// TestRouteMTUFitsPadding: a packet of the route MTU a small path gets,
// padded by WireGuard to a multiple of 16 (at most to the interface's MTU)
// and sealed, fits the path; an interface whose MTU fits gets no route MTU.
func TestRouteMTUFitsPadding(t *testing.T) {
	v4, v6 := netip.MustParseAddr("203.0.113.22"), netip.MustParseAddr("2001:db8::22")
	for _, tc := range []struct {
		path, iface int
		dst         netip.Addr
		relayed     bool
		want        int
	}{
		{1300, 1280, v4, false, 1232}, // 1240 was padded to 1248: 1308-byte datagrams
		{1200, 1280, v4, false, 1136},
		{1280, 1280, v6, false, 1200},
		{1300, 1280, v4, true, 1200},
		{1340, 1280, v4, false, 0},
		{1300, 1240, v4, false, 0}, // MTU = 1240 set by hand: padded at most to 1240
		{1300, 1236, v4, false, 0},
		{600, 1280, v4, false, minIPv4MTU},
	} {
		got := fittingRouteMTU(innerMTU(tc.path, tc.dst, tc.relayed), tc.iface)
		if got != tc.want {
			t.Errorf("path %d, interface %d, %v, relayed %v: route MTU %d, want %d", tc.path, tc.iface, tc.dst, tc.relayed, got, tc.want)
		}
		mtu := tc.iface
		if got != 0 {
			mtu = got
		}
		header := 20 + 8 + wireGuardOverhead
		if tc.dst.Is6() {
			header = 40 + 8 + wireGuardOverhead
		}
		if tc.relayed {
			header += wire.RelayHeaderLen
		}
		padded := min((mtu+wireGuardPadding-1)&^(wireGuardPadding-1), tc.iface)
		if tc.path >= minIPv4MTU+header && padded+header > tc.path {
			t.Errorf("path %d, interface %d: a %d-byte packet padded to %d makes a %d-byte datagram", tc.path, tc.iface, mtu, padded, padded+header)
		}
	}
}
