package portmap

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	t0     = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	public = netip.MustParseAddr("203.0.113.21")
)

func mapped(p Protocol, ext string, life time.Duration) *Mapping {
	return &Mapping{Protocol: p, Internal: 4000, External: netip.MustParseAddrPort(ext), Lifetime: life}
}

// TestMachineRenews: a mapping is renewed at half its lifetime with the
// protocol that granted it, and offered at the router's address.
func TestMachineRenews(t *testing.T) {
	m := NewMachine(ModeAuto)
	ask, prev := m.Tick(t0)
	if !ask || prev != nil {
		t.Fatalf("first tick: ask %v prev %v, want a fresh ask", ask, prev)
	}
	if ask, _ := m.Tick(t0); ask {
		t.Fatal("asked twice while the first ask is under way")
	}
	if !m.Answered(t0, mapped(PCP, "203.0.113.21:4000", 2*time.Hour), nil) {
		t.Fatal("a first mapping did not change the offer")
	}
	if _, ok := m.Offer(); ok {
		t.Fatal("offered before our public address is known")
	}
	m.SetPublic(public)
	if ep, ok := m.Offer(); !ok || ep.String() != "203.0.113.21:4000" {
		t.Fatalf("offer %v %v", ep, ok)
	}
	if ask, _ := m.Tick(t0.Add(59 * time.Minute)); ask {
		t.Fatal("renewed before half the lifetime")
	}
	ask, prev = m.Tick(t0.Add(time.Hour))
	if !ask || prev == nil || prev.Protocol != PCP {
		t.Fatalf("at half the lifetime: ask %v prev %v, want a renewal over PCP", ask, prev)
	}
	renewed := mapped(PCP, "203.0.113.21:4000", 2*time.Hour)
	renewed.Epoch = 3600 // the router kept running
	if m.Answered(t0.Add(time.Hour), renewed, nil) {
		t.Fatal("a renewal of the same endpoint changed the offer")
	}
	st := m.Status(t0.Add(90 * time.Minute))
	if !st.Offered || st.Protocol != PCP || st.LifetimeLeft != 90*60 || st.Reason != "" {
		t.Fatalf("status %+v", st)
	}
	if c := m.Counts()[PCP]; c[OutcomeMapped] != 1 || c[OutcomeRenewed] != 1 {
		t.Fatalf("counts %v", c)
	}
}

// TestMachineRenewalUnanswered: a silent router is asked again every
// renewRetry while the mapping lasts; a mapping that lapses is dropped.
func TestMachineRenewalUnanswered(t *testing.T) {
	m := NewMachine(ModeNATPMP)
	m.SetPublic(public)
	m.Tick(t0)
	m.Answered(t0, mapped(NATPMP, "203.0.113.21:4000", time.Minute), nil)
	now := t0.Add(30 * time.Second)
	for {
		ask, prev := m.Tick(now)
		if !ask {
			t.Fatalf("no ask at %v", now.Sub(t0))
		}
		if prev == nil {
			break // lapsed: asked afresh
		}
		m.Answered(now, nil, map[Protocol]error{NATPMP: ErrNoAnswer})
		if _, ok := m.Offer(); !ok && now.Before(t0.Add(time.Minute)) {
			t.Fatalf("not offered at %v, before the lifetime ends", now.Sub(t0))
		}
		now = now.Add(renewRetry)
	}
	if now.Before(t0.Add(time.Minute)) {
		t.Fatalf("dropped at %v, before it lapsed", now.Sub(t0))
	}
	if _, ok := m.Offer(); ok {
		t.Fatal("a lapsed mapping is still offered")
	}
}

// TestMachineRouterForgot: a refused renewal (the router restarted and
// forgot it) drops the mapping and asks all protocols again at once.
func TestMachineRouterForgot(t *testing.T) {
	m := NewMachine(ModeAuto)
	m.SetPublic(public)
	m.Tick(t0)
	m.Answered(t0, mapped(UPnP, "203.0.113.21:4000", 2*time.Hour), nil)
	now := t0.Add(time.Hour)
	m.Tick(now)
	if !m.Answered(now, nil, map[Protocol]error{UPnP: &RefusedError{Protocol: UPnP, Code: 714}}) {
		t.Fatal("a refused renewal did not change the offer")
	}
	if ask, prev := m.Tick(now); !ask || prev != nil {
		t.Fatalf("after a refused renewal: ask %v prev %v, want a fresh ask at once", ask, prev)
	}
	if st := m.Status(now); st.Offered || !strings.Contains(st.Reason, "result code 714") {
		t.Fatalf("status %+v", st)
	}
}

// TestMachineNoGateway: nothing answered: the reason says so, and the
// gateway is asked again after a backoff that doubles.
func TestMachineNoGateway(t *testing.T) {
	m := NewMachine(ModeAuto)
	now := t0
	var waits []time.Duration
	if ask, _ := m.Tick(now); !ask {
		t.Fatal("no ask")
	}
	for range 3 {
		m.Answered(now, nil, map[Protocol]error{NATPMP: ErrNoAnswer, PCP: ErrNoAnswer, UPnP: ErrNoAnswer})
		next := now
		for ask := false; !ask; ask, _ = m.Tick(next) {
			next = next.Add(time.Second)
		}
		waits = append(waits, next.Sub(now))
		now = next
	}
	if waits[0] != retryMin || waits[1] != 2*retryMin || waits[2] != 4*retryMin {
		t.Fatalf("retries after %v, want %v doubling", waits, retryMin)
	}
	if st := m.Status(now); st.Reason != "no gateway answered" {
		t.Fatalf("reason %q", st.Reason)
	}
	if m.Counts()[PCP][OutcomeNoAnswer] == 0 {
		t.Fatalf("counts %v", m.Counts())
	}
}

// TestMachineRefusedReason: a refusal beats the others' silence in the
// reason, with its result code.
func TestMachineRefusedReason(t *testing.T) {
	m := NewMachine(ModeAuto)
	m.Tick(t0)
	m.Answered(t0, nil, map[Protocol]error{NATPMP: ErrNoAnswer, PCP: &RefusedError{Protocol: PCP, Code: 2}, UPnP: ErrNoAnswer})
	if r := m.Status(t0).Reason; r != "pcp: router refused: result code 2 (not authorized)" {
		t.Fatalf("reason %q", r)
	}
}

// TestMachineDoubleNAT: a router whose WAN address is not our public one
// sits behind another NAT: its forward is not offered, and status says so.
func TestMachineDoubleNAT(t *testing.T) {
	m := NewMachine(ModeAuto)
	m.SetPublic(public)
	m.Tick(t0)
	m.Answered(t0, mapped(NATPMP, "100.64.0.2:4000", 2*time.Hour), nil)
	if ep, ok := m.Offer(); ok {
		t.Fatalf("offered %v from behind a second NAT", ep)
	}
	st := m.Status(t0)
	if st.Offered || !strings.Contains(st.Reason, "double NAT") || !strings.Contains(st.Reason, "100.64.0.2") {
		t.Fatalf("status %+v", st)
	}
	m.Offer()
	if n := m.Counts()[NATPMP][OutcomeDoubleNAT]; n != 1 {
		t.Fatalf("double NAT counted %d times, want once", n)
	}
}

// TestMachineUnnamedAddress: a router that will not name its WAN address
// (UPnP) is offered at our public address with its port.
func TestMachineUnnamedAddress(t *testing.T) {
	m := NewMachine(ModeUPnP)
	m.SetPublic(public)
	m.Tick(t0)
	m.Answered(t0, &Mapping{Protocol: UPnP, Internal: 4000, External: netip.AddrPortFrom(netip.Addr{}, 4001), Lifetime: time.Hour}, nil)
	if ep, ok := m.Offer(); !ok || ep.String() != "203.0.113.21:4001" {
		t.Fatalf("offer %v %v", ep, ok)
	}
}

// TestMachineNetworkChange: a network change forgets the old network's
// mapping and asks at once; off never asks.
func TestMachineNetworkChange(t *testing.T) {
	m := NewMachine(ModeAuto)
	m.SetPublic(public)
	m.Tick(t0)
	m.Answered(t0, mapped(PCP, "203.0.113.21:4000", 2*time.Hour), nil)
	now := t0.Add(time.Minute)
	if !m.Reask(now, true) {
		t.Fatal("forgetting the mapping did not change the offer")
	}
	if ask, prev := m.Tick(now); !ask || prev != nil {
		t.Fatalf("after a network change: ask %v prev %v", ask, prev)
	}
	off := NewMachine(ModeOff)
	if ask, _ := off.Tick(t0); ask || off.Reask(t0, true) {
		t.Fatal("port mapping off asked")
	}
	if r := off.Status(t0).Reason; r != "port mapping is off" {
		t.Fatalf("reason %q", r)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"auto", "off", "natpmp", "pcp", "upnp"} {
		m, err := ParseMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseMode("igd"); err == nil {
		t.Error("ParseMode(igd) took it")
	}
	if m, _ := ParseMode(""); m != ModeAuto || len(m.Protocols()) != 3 {
		t.Errorf("default %v", m)
	}
}

// TestMachineEpoch: an answer whose epoch is below the last one plus 7/8
// of the time since, less 2 s, comes from a router that restarted (RFC
// 6886 §3.6): its forward is new, and the other protocols' it held for
// us are gone; an epoch that kept pace, or lagged within the slack, is a
// renewal. Each router and protocol keeps its own count.
func TestMachineEpoch(t *testing.T) {
	gw := netip.MustParseAddr("192.168.1.1")
	answer := func(p Protocol, epoch uint32, also ...Mapping) *Mapping {
		got := mapped(p, "203.0.113.21:4000", 2*time.Hour)
		got.Gateway, got.Epoch, got.also = gw, epoch, also
		return got
	}
	m := NewMachine(ModeAuto)
	m.Tick(t0)
	m.Answered(t0, answer(NATPMP, 1000, Mapping{Protocol: PCP, Gateway: gw, Epoch: 1000}), nil)
	steps := []struct {
		after     time.Duration
		epoch     uint32
		restarted bool
	}{
		{time.Hour, 1000 + 3600, false},                 // kept pace
		{time.Hour, 1000 + 2*3600 - 3600/8 - 1, false},  // a slow clock: 7/8 of ours, within 2 s
		{time.Hour, 1000 + 3*3600 - 3600/4 - 10, true},  // behind 7/8 by more than 2 s
		{time.Hour, 1000 + 4*3600 - 3600/4 - 10, false}, // counting on from there
		{time.Hour, 7, true},                            // back near zero
	}
	now := t0
	for i, s := range steps {
		now = now.Add(s.after)
		if ask, prev := m.Tick(now); !ask || prev == nil {
			t.Fatalf("step %d: no renewal due", i)
		}
		restarts := m.Restarts()
		got := answer(NATPMP, s.epoch, Mapping{Protocol: PCP, Gateway: gw, Epoch: s.epoch})
		m.Answered(now, got, nil)
		if restarted := m.Restarts() != restarts; restarted != s.restarted {
			t.Fatalf("step %d: epoch %d at %v: restarted %v, want %v", i, s.epoch, now.Sub(t0), restarted, s.restarted)
		}
		if s.restarted && len(m.Current().also) != 0 {
			t.Fatalf("step %d: the other protocols' forwards are kept after the router's restart", i)
		}
	}
	if c := m.Counts()[NATPMP]; c[OutcomeMapped] != 3 || c[OutcomeRenewed] != 3 {
		t.Fatalf("counts %v: want the first mapping and the two after restarts as new, the rest renewed", c)
	}
	// Another protocol's epoch, or another router's, is its own.
	m2 := NewMachine(ModeAuto)
	m2.Tick(t0)
	m2.Answered(t0, answer(PCP, 50000), nil)
	m2.Tick(t0.Add(time.Hour))
	other := answer(PCP, 10)
	other.Gateway = netip.MustParseAddr("10.0.0.1")
	m2.Answered(t0.Add(time.Hour), other, nil)
	m2.Tick(t0.Add(2 * time.Hour))
	m2.Answered(t0.Add(2*time.Hour), answer(NATPMP, 20), nil)
	if n := m2.Restarts(); n != 0 {
		t.Fatalf("%d restarts told by other routers' and protocols' epochs", n)
	}
}

// TestMachineEpochOfCarriedForwards: a renewal carries the other
// protocols' forwards over from the first ask, with that ask's epochs;
// they tell nothing of a restart an hour on (counted one before).
func TestMachineEpochOfCarriedForwards(t *testing.T) {
	gw := netip.MustParseAddr("192.168.1.1")
	first := mapped(NATPMP, "203.0.113.21:4000", 2*time.Hour)
	first.Gateway, first.Epoch = gw, 1000
	first.also = []Mapping{{Protocol: PCP, Gateway: gw, Epoch: 1000}}
	m := NewMachine(ModeAuto)
	m.Tick(t0)
	m.Answered(t0, first, nil)
	renewal := mapped(NATPMP, "203.0.113.21:4000", 2*time.Hour)
	renewal.Gateway, renewal.Epoch, renewal.also = gw, 1000+3600, first.also
	m.Tick(t0.Add(time.Hour))
	m.Answered(t0.Add(time.Hour), renewal, nil)
	if n := m.Restarts(); n != 0 || len(m.Current().also) != 1 {
		t.Fatalf("%d restarts, %d other forwards kept after a renewal that carried the first ask's", n, len(m.Current().also))
	}
}

// TestMachineAnnouncementsPaced: an announcement starts an ask at once,
// but another within announceGap does not: anyone on the LAN can send
// them in the gateway's name.
func TestMachineAnnouncementsPaced(t *testing.T) {
	m := NewMachine(ModeAuto)
	m.Tick(t0)
	m.Answered(t0, mapped(NATPMP, "203.0.113.21:4000", 2*time.Hour), nil)
	now := t0.Add(time.Minute)
	if !m.Announced(now) {
		t.Fatal("the first announcement was not taken")
	}
	if ask, _ := m.Tick(now); !ask {
		t.Fatal("no ask after the announcement")
	}
	m.Answered(now, mapped(NATPMP, "203.0.113.21:4000", 2*time.Hour), nil)
	for _, d := range []time.Duration{time.Millisecond, announceGap - time.Millisecond} {
		if m.Announced(now.Add(d)) {
			t.Fatalf("an announcement %v after the last was taken", d)
		}
		if ask, _ := m.Tick(now.Add(d)); ask {
			t.Fatalf("an ask %v after the last announcement", d)
		}
	}
	if !m.Announced(now.Add(announceGap)) {
		t.Fatalf("an announcement %v after the last was not taken", announceGap)
	}
	if NewMachine(ModeOff).Announced(now) {
		t.Fatal("an announcement taken with port mapping off")
	}
}
