package link

import (
	"net/netip"
	"testing"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// kindOnly is a transport of a kind, that sends nothing.
type kindOnly struct{ kind PathKind }

func (t *kindOnly) Send([][]byte, key.Key, netip.AddrPort) error { return nil }
func (t *kindOnly) Kind() PathKind                               { return t.kind }
func (t *kindOnly) Close() error                                 { return nil }

func TestRouteKind(t *testing.T) {
	public := netip.MustParseAddrPort("203.0.113.22:4000")
	lan := netip.MustParseAddrPort("192.168.1.2:4000")
	shared, socket := &kindOnly{Shared}, &kindOnly{Socket}
	relay, tcp, turn := &kindOnly{Relay}, &kindOnly{RelayTCP}, &kindOnly{TURN}
	for _, tc := range []struct {
		r    Route
		want string
	}{
		{Route{}, "connecting"},
		{Route{Dst: public, Via: shared}, "direct"},
		{Route{Dst: public, Via: socket}, "direct"},
		{Route{Dst: lan, Via: shared}, "lan"},
		{Route{Dst: public, Via: relay}, "relay"},
		{Route{Dst: public, Via: turn}, "relay"},
		{Route{Dst: public, Via: tcp}, "relay-tcp"},
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
