package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// Tests of the flow table's shares the adversarial review found wanting
// (issue 32's fix round): a share per address rather than per member,
// and a full table that took from a few members sampled rather than
// from the heaviest.

// flowsOf is how many flows f holds whose remote end is one of m's
// addresses.
func flowsOf(f *Filter, m *Member) int {
	f.ct.mu.RLock()
	defer f.ct.mu.RUnlock()
	n := 0
	for k := range f.ct.flows {
		if m.holds(k.remote) {
			n++
		}
	}
	return n
}

// TestFlowSharePerMember: a member whose certificate holds four addresses
// floods from all four, and this machine answers on each: it gets one
// share, not four.
func TestFlowSharePerMember(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	four := &Member{Name: "four", Addrs: []netip.Addr{
		netip.MustParseAddr("10.7.0.10"), netip.MustParseAddr("10.7.0.11"),
		netip.MustParseAddr("10.7.0.12"), netip.MustParseAddr("10.7.0.13"),
	}}
	members := map[netip.Addr]*Member{}
	for _, a := range four.Addrs {
		members[a] = four
	}
	f := New()
	f.Set(signPolicy(t, nk, 1, "[Rule]\nFrom = *\nTo = *\nAllow = tcp/22\n"), server, members)
	for _, a := range four.Addrs {
		src := &Member{Addrs: []netip.Addr{a}}
		for sport := range uint16(4096) {
			f.admit(ipv4(protoTCP, src, server, 1000+sport, 22, tcpSYN))
			f.sent(ipv4(protoUDP, server, src, 53, 1000+sport, 0))
		}
	}
	t.Logf("a member of 4 addresses: %d flows, %d evicted", f.Flows(), f.FlowsEvicted())
	if n := flowsOf(f, four); n > perSender {
		t.Errorf("a member of 4 addresses holds %d flows, want at most its share (%d)", n, perSender)
	}
}

// TestFlowEvictionTakesHeaviest: one member holds its full share, then
// 200 members open 240 connections each, filling the part of the table
// members may take. Room is made from the flooder's flows, not from the
// light members': every one of theirs is still tracked.
func TestFlowEvictionTakesHeaviest(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	flooder := &Member{Name: "flooder", Addrs: []netip.Addr{netip.MustParseAddr("10.9.1.1")}}
	members := map[netip.Addr]*Member{flooder.Addrs[0]: flooder}
	var light []*Member
	for i := range 200 {
		m := &Member{Name: "light", Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)})}}
		members[m.Addrs[0]] = m
		light = append(light, m)
	}
	f := New()
	f.Set(signPolicy(t, nk, 1, "[Rule]\nFrom = *\nTo = *\nAllow = tcp\n"), server, members)
	for sport := range uint16(10000) {
		f.admit(ipv4(protoTCP, flooder, server, 1000+sport, 22, tcpSYN))
	}
	const each = 240
	for _, m := range light {
		for sport := range uint16(each) {
			f.admit(ipv4(protoTCP, m, server, 1000+sport, 22, tcpSYN))
		}
	}
	over := perSender + 200*each - maxInbound // flows past the members' part
	t.Logf("flooder holds %d flows, %d refused, %d evicted", flowsOf(f, flooder), f.FlowsRefused(), f.FlowsEvicted())
	lost := 0
	for _, m := range light {
		lost += each - flowsOf(f, m)
	}
	if lost != 0 {
		t.Errorf("the light members lost %d flows to make room, want 0 (the flooder's go)", lost)
	}
	if got := flowsOf(f, flooder); got != perSender-over {
		t.Errorf("the flooder holds %d flows, want %d", got, perSender-over)
	}
	if f.FlowsRefused() != 0 {
		t.Errorf("%d flows refused, want 0", f.FlowsRefused())
	}
}

// checkShares reports how ct's books differ from its flows: each share's
// count, the lists by count, the heaviest, the total charged.
func checkShares(ct *conntrack) string {
	live := map[*share]int{}
	for _, t := range ct.flows {
		if t.sh != nil {
			live[t.sh]++
		}
	}
	total, most := 0, 0
	for key, sh := range ct.senders {
		if sh.key != key || sh.n != live[sh] || sh.n == 0 {
			return fmt.Sprintf("share %v counts %d flows, holds %d", key, sh.n, live[sh])
		}
		listed := false
		for o := ct.byCount[sh.n]; o != nil; o = o.next {
			listed = listed || o == sh
		}
		if !listed {
			return fmt.Sprintf("share %v of %d not listed", key, sh.n)
		}
		total, most = total+sh.n, max(most, sh.n)
	}
	if len(live) != len(ct.senders) || total != ct.charged || most != ct.heaviest {
		return fmt.Sprintf("%d shares hold flows, %d known; %d charged, %d counted; heaviest %d, %d counted",
			len(live), len(ct.senders), total, ct.charged, most, ct.heaviest)
	}
	return ""
}

// TestShareBooks: members open and this machine answers flows at random,
// past shares and the charged part, with sweeps and a new policy between;
// the books of shares stay true to the flows held.
func TestShareBooks(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	members := map[netip.Addr]*Member{}
	var ms []*Member
	for i := range 40 {
		m := &Member{Name: "m", Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 9, 0, byte(2*i + 1)}), netip.AddrFrom4([4]byte{10, 9, 0, byte(2*i + 2)})}}
		members[m.Addrs[0]], members[m.Addrs[1]] = m, m
		ms = append(ms, m)
	}
	pols := []*cert.Document{signPolicy(t, nk, 1, "[Rule]\nFrom = *\nTo = *\nAllow = tcp, udp\n"), signPolicy(t, nk, 2, "[Rule]\nFrom = *\nTo = *\nAllow = tcp\n")}
	f := New()
	f.Set(pols[0], server, members)
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	for round := range 6 {
		for range 40000 {
			m := ms[min(rng.IntN(len(ms)), rng.IntN(len(ms)))] // some much heavier than others
			src := &Member{Addrs: []netip.Addr{m.Addrs[rng.IntN(2)]}}
			port := uint16(rng.IntN(4000))
			if rng.IntN(3) == 0 {
				f.sent(ipv4(protoUDP, server, src, 53, port, 0))
			} else {
				f.admit(ipv4(protoTCP, src, server, port, 22, tcpSYN))
			}
		}
		f.ct.mu.RLock()
		bad := checkShares(&f.ct)
		f.ct.mu.RUnlock()
		if bad != "" {
			t.Fatalf("round %d: %s", round, bad)
		}
		now = now.Add(40 * time.Second)
		f.Set(pols[round%2], server, members)
		f.Tick(now)
	}
	t.Logf("%d flows, %d evicted, %d refused", f.Flows(), f.FlowsEvicted(), f.FlowsRefused())
}
