package names

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

type oneMember struct{ asked *string }

func (m oneMember) LookupName(name string, _ time.Duration) []netip.Addr {
	*m.asked = name
	if name == "m3" {
		return []netip.Addr{netip.MustParseAddr("100.64.1.3")}
	}
	return nil
}

func TestResolverLookupHost(t *testing.T) {
	var asked string
	r := NewResolver(namesConfig(t), oneMember{&asked})
	for _, tc := range []struct {
		host string
		want string // first address; "" for an error
	}{
		{"bob", "100.64.0.2"}, {"Bob", "100.64.0.2"}, {"bob.punch", "100.64.0.2"}, {"bob.punch.", "100.64.0.2"},
		{"alice", "100.64.0.1"}, {"alice.punch", "100.64.0.1"},
		{"m3.punch", "100.64.1.3"}, {"100.64.0.9", "100.64.0.9"}, {"::ffff:100.64.0.9", "100.64.0.9"},
		{"carol.punch", ""}, {"a.b.punch", ""},
	} {
		addrs, err := r.LookupHost(context.Background(), tc.host)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%s: %v, want an error", tc.host, addrs)
		case tc.want != "" && (err != nil || len(addrs) == 0 || addrs[0].String() != tc.want):
			t.Errorf("%s: %v %v, want %s", tc.host, addrs, err, tc.want)
		}
	}
	if asked != "carol" {
		t.Errorf("the last member asked for is %q, want carol (m3 and carol are looked up; a.b is no member name)", asked)
	}
}
