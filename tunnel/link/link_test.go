package link

import (
	"net/netip"
	"testing"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

func TestRouteKind(t *testing.T) {
	public := netip.MustParseAddrPort("203.0.113.22:4000")
	lan := netip.MustParseAddrPort("192.168.1.2:4000")
	for _, tc := range []struct {
		r    Route
		want string
	}{
		{Route{}, "connecting"},
		{Route{Dst: public}, "direct"},
		{Route{Dst: lan}, "lan"},
		{Route{Dst: public, Relay: true}, "relay"},
		{Route{Dst: public, Relay: true, Stream: &wire.Stream{}}, "relay-tcp"},
	} {
		if got := tc.r.Kind(); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.r, got, tc.want)
		}
	}
}

// TestLeads: of two keys exactly one leads, and no key leads itself.
func TestLeads(t *testing.T) {
	a, b := key.Key{1}, key.Key{2}
	if !Leads(a, b) || Leads(b, a) || Leads(a, a) {
		t.Fatalf("Leads(a, b) %v, Leads(b, a) %v, Leads(a, a) %v", Leads(a, b), Leads(b, a), Leads(a, a))
	}
}
