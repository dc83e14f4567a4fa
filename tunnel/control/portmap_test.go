package control

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
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

// mappedAt gives the port mapper a mapping of gw's, offered, in a mode
// that asks (ModeAuto), as if an ask had just been answered.
func (h *harness) mappedAt(gw netip.Addr) *portMapper {
	h.t.Helper()
	h.register()
	pm := &h.c.portmap
	pm.m = portmap.NewMachine(portmap.ModeAuto)
	pm.setPublic(ourPub.Addr(), h.now)
	pm.answered(h.now, gw, &portmap.Mapping{Protocol: portmap.PCP, Gateway: gw, Internal: 51820,
		External: netip.AddrPortFrom(ourPub.Addr(), 40001), Lifetime: time.Hour}, nil)
	if pm.ourNAT() != nat.MappingNone {
		h.t.Fatalf("the mapping is not offered: %+v", pm.view(h.now))
	}
	return pm
}

// TestPortMappingGatewayOffControl: after a change of network, the
// gateway (which reads the routing table) is looked up on a helper
// goroutine, not on the control goroutine, which goes on while the
// lookup is slow; the answer, posted back, forgets the mapping of the
// old gateway's. Before: networkChanged waited for the lookup.
func TestPortMappingGatewayOffControl(t *testing.T) {
	h := newHarness(t)
	oldGW, newGW := netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("10.0.0.1")
	pm := h.mappedAt(oldGW)
	lookingUp, release := make(chan struct{}, 1), make(chan struct{})
	var gaveUp atomic.Bool
	pm.gateway = func() (netip.Addr, error) {
		lookingUp <- struct{}{}
		select {
		case <-release:
			return newGW, nil
		case <-time.After(10 * time.Second): // so that a lookup run by networkChanged itself ends
			gaveUp.Store(true)
			return netip.Addr{}, errors.New("never released")
		}
	}
	h.c.networkChanged(h.now) // the test's goroutine plays the control goroutine
	if gaveUp.Load() {
		t.Fatal("networkChanged waited for the gateway lookup")
	}
	if pm.m.Current() == nil {
		t.Fatal("the mapping was forgotten before the gateway was known")
	}
	select {
	case <-lookingUp:
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway was not looked up after the network changed")
	}
	close(release)
	select {
	case f := <-h.c.actions:
		f()
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway found was not posted back to the control goroutine")
	}
	if pm.m.Current() != nil || pm.ourNAT() == nat.MappingNone {
		t.Fatalf("the old gateway's mapping is still held or offered: %+v", pm.view(h.now))
	}
}

// TestPortMappingAnnouncementOffControl: an announcement is checked
// against the gateway on the listener's goroutine; only the gateway's
// reaches the control goroutine, which asks again at once and looks
// nothing up.
func TestPortMappingAnnouncementOffControl(t *testing.T) {
	h := newHarness(t)
	gw := netip.MustParseAddr("192.168.1.1")
	pm := h.mappedAt(gw)
	onControl := false // the test's goroutine plays both, one at a time
	pm.gateway = func() (netip.Addr, error) {
		if onControl {
			t.Error("the gateway was looked up on the control goroutine")
		}
		return gw, nil
	}
	heard := pm.hearer()
	hear := func(from netip.Addr) (asks bool) {
		heard(from)
		onControl = true
		h.runPosted()
		onControl = false
		asks, _ = pm.m.Tick(h.now)
		return asks
	}
	if hear(netip.MustParseAddr("192.168.1.66")) {
		t.Fatal("an announcement from another host than the gateway made us ask again")
	}
	if !hear(gw) {
		t.Fatal("the gateway's announcement did not make us ask again")
	}
}

// TestAnnouncementFloodLooksUpOnce: a host on the LAN flooding
// announcements in the gateway's name or its own costs one lookup of the
// gateway (a read of the routing table) a second, not one a datagram.
func TestAnnouncementFloodLooksUpOnce(t *testing.T) {
	h := newHarness(t)
	gw := netip.MustParseAddr("192.168.1.1")
	pm := h.mappedAt(gw)
	lookups := 0
	pm.gateway = func() (netip.Addr, error) { lookups++; return gw, nil }
	heard := pm.hearer()
	for i := range 1000 {
		heard(netip.AddrFrom4([4]byte{192, 168, 1, byte(i)}))
	}
	if lookups != 1 {
		t.Fatalf("%d lookups of the gateway for 1000 announcements within a moment, want 1", lookups)
	}
	h.runPosted()
	if asks, _ := pm.m.Tick(h.now); !asks {
		t.Fatal("the gateway's announcement among them did not make us ask again")
	}
}

// TestListenerRetried: a listener that cannot start (its port held by a
// program that does not share it) is started again until it can, and
// not after the port mapper stops.
func TestListenerRetried(t *testing.T) {
	h := newHarness(t)
	pm := &h.c.portmap
	old := listenRetry
	listenRetry = time.Millisecond
	t.Cleanup(func() { listenRetry = old })
	ctx, cancel := context.WithCancel(context.Background())
	pm.ctx = ctx
	tries := 0
	pm.listen("a test's notices", func() error {
		if tries++; tries < 3 {
			return errors.New("address already in use")
		}
		return nil // started, and ran until the end
	})
	if tries != 3 {
		t.Fatalf("%d tries, want 3: the listener was not started again", tries)
	}
	cancel()
	tries = 0
	pm.listen("a test's notices", func() error { tries++; return errors.New("address already in use") })
	if tries != 1 {
		t.Fatalf("%d tries after the port mapper stopped, want 1", tries)
	}
}
