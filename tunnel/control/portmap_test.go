package control

import (
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/nat/portmap"
	"github.com/punchtun/punchtun/rendezvous/wire"
)

// lastRegister is the last registration sent since the last take.
func (h *harness) lastRegister() *wire.Register {
	h.t.Helper()
	bodies, _ := h.opened(h.take(), &h.rvShared)
	var reg *wire.Register
	for _, b := range bodies {
		if r, ok := b.(*wire.Register); ok {
			reg = r
		}
	}
	if reg == nil {
		h.t.Fatal("no registration sent")
	}
	return reg
}

// TestPortMappingOffered: a mapping at our public address is registered
// at once as the first candidate, with our NAT as none; one that is not
// at our public address (a second NAT) is not, and one lost is withdrawn.
func TestPortMappingOffered(t *testing.T) {
	h := newHarness(t)
	h.register()
	gw := netip.MustParseAddr("192.168.1.1")
	mapped := netip.AddrPortFrom(ourPub.Addr(), 40001)
	h.c.portmap.answered(h.now, gw, &portmap.Mapping{Protocol: portmap.PCP, Gateway: gw, Internal: 51820, External: mapped, Lifetime: time.Hour}, nil)
	h.advance(tickInterval)
	reg := h.lastRegister()
	if len(reg.Candidates) == 0 || reg.Candidates[0] != mapped || nat.Mapping(reg.NAT) != nat.MappingNone {
		t.Fatalf("registered NAT %v, candidates %v; want none, %v first", nat.Mapping(reg.NAT), reg.Candidates, mapped)
	}
	if v := h.c.portmap.view(h.now); !v.Offered || v.External != mapped.String() || v.Counts[portmap.PCP][portmap.OutcomeMapped] != 1 {
		t.Fatalf("view %+v", v)
	}

	// The router forgot it: the renewal is refused.
	h.c.portmap.answered(h.now, gw, nil, map[portmap.Protocol]error{portmap.PCP: &portmap.RefusedError{Protocol: portmap.PCP, Code: 2}})
	h.advance(tickInterval)
	reg = h.lastRegister()
	if len(reg.Candidates) > 0 && reg.Candidates[0] == mapped || nat.Mapping(reg.NAT) != nat.MappingEasy {
		t.Fatalf("after the refusal: NAT %v, candidates %v", nat.Mapping(reg.NAT), reg.Candidates)
	}

	// Behind a second NAT: the router's address is not ours.
	h.c.portmap.answered(h.now, gw, &portmap.Mapping{Protocol: portmap.NATPMP, Gateway: gw, Internal: 51820,
		External: netip.MustParseAddrPort("100.65.0.2:40001"), Lifetime: time.Hour}, nil)
	h.advance(tickInterval)
	if v := h.c.portmap.view(h.now); v.Offered || h.c.portmap.ourNAT() != nat.MappingEasy {
		t.Fatalf("offered from behind a second NAT: %+v", v)
	}
}
