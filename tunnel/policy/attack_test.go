package policy

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// Tests of what a member that does not play by the rules tries (issue 32):
// reaching addresses the rules do not name, filling the flow table,
// spoofing ICMP errors, hiding behind IPv6 extension headers and fragments.

// dropped is f's count of drops for the reason named.
func dropped(f *Filter, name string) uint64 {
	for i, n := range DropNames {
		if n == name {
			return f.Dropped[i].Load()
		}
	}
	return 0
}

// to is pkt (IPv4) addressed to dst instead.
func to(pkt []byte, dst string) []byte {
	copy(pkt[16:20], netip.MustParseAddr(dst).AsSlice())
	return pkt
}

func TestRulesJudgeDestination(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	for _, rules := range []string{laptopsToServers, "[Rule]\nFrom = *\nTo = *\nAllow = any\n"} {
		atServer := filterAt(t, signPolicy(t, nk, 1, rules), server, laptop)
		// The laptop routes its ssh to an address the server holds on its
		// LAN (AllowedIPs widened on the laptop's side): not this member's.
		if atServer.admit(to(ipv4(protoTCP, laptop, server, 40000, 22, 0x02), "192.168.1.7")) {
			t.Errorf("%q: the server admits ssh to an address of its LAN", rules)
		}
		if got := dropped(atServer, "destination"); got != 1 {
			t.Errorf("%q: %d drops counted under destination, want 1", rules, got)
		}
		if !atServer.admit(ipv4(protoTCP, laptop, server, 40001, 22, 0x02)) {
			t.Errorf("%q: the server refuses ssh to its network address", rules)
		}
	}
	// No policy: a member reaches this member's addresses only.
	f := filterAt(t, nil, server, laptop)
	if f.admit(to(ipv4(protoTCP, laptop, server, 40000, 22, 0x02), "192.168.1.7")) || dropped(f, "destination") != 1 {
		t.Error("no policy: a member's packet to an address not of this member passes")
	}
	if !f.admit(ipv4(protoTCP, laptop, server, 40000, 80, 0x02)) {
		t.Error("no policy: a member's packet to this member is refused")
	}
	// A static peer (no member) is not judged: it may be a router.
	f = filterAt(t, nil, server)
	if !f.admit(to(ipv4(protoTCP, laptop, server, 40000, 22, 0x02), "192.168.1.7")) {
		t.Error("a static peer's packet to another address is refused")
	}
}

// TestFlowTableFairShare: a member allowed two ports sends SYNs from every
// source port to both; this machine's own new connection still gets its
// reply, the member holds no more than its share, and its flows are gone
// a couple of minutes after, not 30.
func TestFlowTableFairShare(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	rules := "[Rule]\nFrom = *\nTo = *\nAllow = tcp/22, tcp/23\n"
	victim := filterAt(t, signPolicy(t, nk, 1, rules), server, laptop, server2)
	now := time.Now()
	victim.Tick(now)
	admitted := 0
	for sport := 1; sport <= 65535; sport++ {
		for _, dport := range []uint16{22, 23} {
			if victim.admit(ipv4(protoTCP, laptop, server, uint16(sport), dport, tcpSYN)) {
				admitted++
			}
		}
	}
	t.Logf("flood: %d SYNs admitted, %d flows tracked, %d refused, %d evicted", admitted, victim.Flows(), victim.FlowsRefused(), victim.FlowsEvicted())
	if victim.Flows() > 4096 {
		t.Errorf("one member holds %d flows, want a bounded share (at most 4096)", victim.Flows())
	}
	// The flooder's newest connection is tracked (it evicted its oldest).
	if !victim.admit(ipv4(protoTCP, laptop, server, 65535, 23, tcpACK)) {
		t.Error("the flooder's newest flow is not tracked")
	}
	// The victim opens a connection to server2: the reply passes.
	victim.sent(ipv4(protoTCP, server, server2, 50000, 22, tcpSYN))
	if !victim.admit(ipv4(protoTCP, server2, server, 22, 50000, tcpSYN|tcpACK)) {
		t.Fatal("after the flood, the reply to this machine's own connection is refused")
	}
	// Half-open flows go within two minutes; the own, established one stays.
	victim.sent(ipv4(protoTCP, server, server2, 50000, 22, tcpACK))
	victim.Tick(now.Add(2 * time.Minute))
	victim.Tick(now.Add(2*time.Minute + 11*time.Second))
	if victim.Flows() != 1 {
		t.Errorf("%d flows two minutes after a SYN flood, want 1 (this machine's own)", victim.Flows())
	}
	if !victim.admit(ipv4(protoTCP, server2, server, 22, 50000, tcpACK)) {
		t.Error("this machine's established connection forgotten")
	}
}

// TestOwnFlowsReserved: members together cannot fill the table: with many
// members each at its share, this machine's connections find room.
func TestOwnFlowsReserved(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	members := map[netip.Addr]*Member{}
	f := New()
	for i := range 64 {
		a := netip.AddrFrom4([4]byte{10, 8, 0, byte(i + 1)})
		members[a] = &Member{Name: "m", Addrs: []netip.Addr{a}}
	}
	members[server2.Addrs[0]] = server2
	f.Set(signPolicy(t, nk, 1, "[Rule]\nFrom = 10.8.0.0/24\nTo = *\nAllow = tcp\n"), server, members)
	for a, m := range members {
		if m == server2 {
			continue
		}
		src := &Member{Addrs: []netip.Addr{a}}
		for sport := 1; sport <= 4096; sport++ {
			f.admit(ipv4(protoTCP, src, server, uint16(sport), 22, tcpSYN))
		}
	}
	t.Logf("64 members flooding: %d flows tracked, %d refused, %d evicted", f.Flows(), f.FlowsRefused(), f.FlowsEvicted())
	// Members that came late still got their flows tracked: the heaviest
	// made room.
	if f.FlowsRefused() != 0 {
		t.Errorf("%d flows of members refused while others held the table", f.FlowsRefused())
	}
	for port := range uint16(1000) {
		f.sent(ipv4(protoTCP, server, server2, 30000+port, 22, tcpSYN))
		if !f.admit(ipv4(protoTCP, server2, server, 22, 30000+port, tcpSYN|tcpACK)) {
			t.Fatalf("this machine's connection %d gets no reply with members at their shares", port)
		}
	}
}

func TestICMPErrorOnlyFromFlowPeer(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(t, signPolicy(t, nk, 1, laptopsToServers), laptop, server, server2)
	out := ipv4(protoUDP, laptop, server, 5000, 9, 0)[:28]
	f.sent(out)
	// server2 claims laptop's flow to the server is unreachable.
	if f.admit(append(icmpEcho(server2, laptop, 3, 0), out...)) {
		t.Error("an ICMP error from another member about laptop's flow to the server passes")
	}
	if !f.admit(append(icmpEcho(server, laptop, 3, 0), out...)) {
		t.Error("the server's ICMP error about laptop's flow to it is refused")
	}
}

// frag4 is pkt as an IPv4 fragment of id at offset (8-byte units).
func frag4(pkt []byte, id, offset uint16, more bool) []byte {
	binary.BigEndian.PutUint16(pkt[4:], id)
	v := offset
	if more {
		v |= 0x2000
	}
	binary.BigEndian.PutUint16(pkt[6:], v)
	return pkt
}

var (
	laptop6 = &Member{Name: "laptop", Groups: []string{"laptops"}, Addrs: []netip.Addr{netip.MustParseAddr("fd07::1")}}
	server6 = &Member{Name: "server", Groups: []string{"servers"}, Addrs: []netip.Addr{netip.MustParseAddr("fd07::2")}}
)

// ipv6 builds a packet from src to dst: the extension headers ext (each
// [next header, header bytes] as given), then proto and l4.
func ipv6(src, dst *Member, proto uint8, l4 []byte, ext ...[]byte) []byte {
	pkt := make([]byte, 40)
	pkt[0] = 0x60
	copy(pkt[8:24], src.Addrs[0].AsSlice())
	copy(pkt[24:40], dst.Addrs[0].AsSlice())
	next := 6 // where the next header's number goes
	for _, e := range ext {
		pkt[next] = e[0]
		next = len(pkt)
		pkt = append(pkt, e[1:]...)
	}
	pkt[next] = proto
	return append(pkt, l4...)
}

// extOpts is an 8-byte options header (hop-by-hop, routing or
// destination options, by kind); extFrag a Fragment header.
func extOpts(kind byte) []byte { return []byte{kind, 0, 0, 1, 4, 0, 0, 0, 0} }

func extFrag(id uint32, offset uint16, more bool) []byte {
	h := []byte{extFragment, 0, 0, 0, 0, 0, 0, 0, 0}
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(h[3:], v)
	binary.BigEndian.PutUint32(h[5:], id)
	return h
}

func tcpHeader(sport, dport uint16, flags byte) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	h[12], h[13] = 5<<4, flags
	return h
}

func TestLaterFragmentsOfAdmittedFlow(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	pol := signPolicy(t, nk, 1, laptopsToServers)
	f := filterAt(t, pol, server, laptop)
	if !f.admit(frag4(ipv4(protoTCP, laptop, server, 40000, 22, tcpSYN), 77, 0, true)) {
		t.Fatal("the first fragment of ssh refused")
	}
	if !f.admit(frag4(ipv4(protoTCP, laptop, server, 0, 0, 0), 77, 3, false)) {
		t.Error("IPv4: a later fragment of an admitted datagram refused")
	}
	if f.admit(frag4(ipv4(protoTCP, laptop, server, 0, 0, 0), 78, 3, false)) {
		t.Error("IPv4: a later fragment of a datagram never admitted passes")
	}
	f6 := filterAt(t, pol, server6, laptop6)
	first := ipv6(laptop6, server6, protoTCP, tcpHeader(40000, 22, tcpSYN), extFrag(9, 0, true))
	if !f6.admit(first) {
		t.Fatal("IPv6: the first fragment of ssh refused")
	}
	if !f6.admit(ipv6(laptop6, server6, protoTCP, make([]byte, 32), extFrag(9, 2, false))) {
		t.Error("IPv6: a later fragment of an admitted datagram refused")
	}
	// Destination options after the Fragment header: the later fragments
	// name those, not TCP.
	if !f6.admit(ipv6(laptop6, server6, protoTCP, tcpHeader(40001, 22, tcpSYN), extFrag(11, 0, true), extOpts(extDestOpts))) ||
		!f6.admit(ipv6(laptop6, server6, extDestOpts, make([]byte, 32), extFrag(11, 2, false))) {
		t.Error("IPv6: a later fragment of an admitted datagram with options after its Fragment header refused")
	}
	if f6.admit(ipv6(laptop6, server6, protoTCP, make([]byte, 32), extFrag(10, 2, false))) {
		t.Error("IPv6: a later fragment of a datagram never admitted passes")
	}
}

func TestICMPv6MatchesICMP(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(t, signPolicy(t, nk, 1, laptopsToServers), server6, laptop6)
	echo := []byte{128, 0, 0, 0, 0, 7, 0, 1}
	if !f.admit(ipv6(laptop6, server6, protoICMPv6, echo)) {
		t.Error("an ICMPv6 echo request refused under icmp")
	}
	if !f.admit(ipv6(laptop6, server6, protoICMPv6, echo, extOpts(extHopByHop))) {
		t.Error("an ICMPv6 echo request behind a hop-by-hop header refused under icmp")
	}
	if !f.admit(ipv6(laptop6, server6, protoICMPv6, echo, extFrag(5, 0, true))) ||
		!f.admit(ipv6(laptop6, server6, protoICMPv6, make([]byte, 16), extFrag(5, 1, false))) {
		t.Error("a fragmented ICMPv6 echo request refused under icmp")
	}
}

func TestIPv6ExtensionHeaders(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(t, signPolicy(t, nk, 1, laptopsToServers), server6, laptop6)
	chain := [][]byte{extOpts(extHopByHop), extOpts(extRouting), extOpts(extDestOpts), extFrag(3, 0, false)}
	if !f.admit(ipv6(laptop6, server6, protoTCP, tcpHeader(40000, 22, tcpSYN), chain...)) {
		t.Error("ssh behind hop-by-hop, routing, destination options and fragment headers refused")
	}
	if f.admit(ipv6(laptop6, server6, protoTCP, tcpHeader(40000, 80, tcpSYN), chain...)) {
		t.Error("port 80 behind extension headers passes a tcp/22 rule")
	}
	long := make([][]byte, maxExtHeaders+1)
	for i := range long {
		long[i] = extOpts(extDestOpts)
	}
	if f.admit(ipv6(laptop6, server6, protoTCP, tcpHeader(40000, 22, tcpSYN), long...)) {
		t.Error("a packet behind too long a chain passes")
	}
	if f.admit(ipv6(laptop6, server6, protoTCP, nil, extOpts(extDestOpts))[:44]) {
		t.Error("a packet with a cut extension header passes")
	}
}

// TestGossipNeverReachesSystem: gossip in a fragment or behind extension
// headers is neither delivered nor handed on, policy or not.
func TestGossipNeverReachesSystem(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	body := Gossip{Kind: GossipSummary, Summary: cert.Summary{PolicySeq: 7}}.Append(nil)
	plain4 := GossipPacket(laptop.Addrs[0], server.Addrs[0], body)
	for _, pol := range []*cert.Document{nil, signPolicy(t, nk, 1, "[Rule]\nFrom = *\nTo = *\nAllow = any\n")} {
		f4 := filterAt(t, pol, server, laptop)
		f6 := filterAt(t, pol, server6, laptop6)
		handed := 0
		for _, f := range []*Filter{f4, f6} {
			f.OnGossip(func(netip.Addr, []byte) { handed++ })
		}
		for name, c := range map[string]struct {
			f   *Filter
			pkt []byte
		}{
			"IPv6 first fragment":    {f6, ipv6(laptop6, server6, protoGossip, body, extFrag(1, 0, true))},
			"IPv6 atomic fragment":   {f6, ipv6(laptop6, server6, protoGossip, body, extFrag(1, 0, false))},
			"IPv6 later fragment":    {f6, ipv6(laptop6, server6, protoGossip, body, extFrag(1, 8, false))},
			"IPv6 behind dest opts":  {f6, ipv6(laptop6, server6, protoGossip, body, extOpts(extDestOpts))},
			"IPv6 behind hop-by-hop": {f6, ipv6(laptop6, server6, protoGossip, body, extOpts(extHopByHop), extFrag(2, 0, true))},
			"IPv4 first fragment":    {f4, frag4(append([]byte(nil), plain4...), 5, 0, true)},
			"IPv4 later fragment":    {f4, frag4(append([]byte(nil), plain4...), 5, 4, false)},
		} {
			if c.f.admit(c.pkt) {
				t.Errorf("policy %v: gossip in an %s reaches the system", pol != nil, name)
			}
		}
		if handed != 0 {
			t.Errorf("policy %v: %d wrapped gossip packets handed on", pol != nil, handed)
		}
		if got := dropped(f4, "malformed") + dropped(f6, "malformed"); got != 7 {
			t.Errorf("policy %v: %d wrapped gossip packets counted, want 7", pol != nil, got)
		}
		if f4.admit(plain4) || handed != 1 {
			t.Errorf("policy %v: plain gossip not handed on", pol != nil)
		}
	}
}

// TestNoNetworkGossipDropped: without a network (static peers only), a
// packet that is or may be gossip is dropped; any other passes.
func TestNoNetworkGossipDropped(t *testing.T) {
	f := New()
	body := []byte{1, 2}
	for name, pkt := range map[string][]byte{
		"plain":               GossipPacket(laptop6.Addrs[0], server6.Addrs[0], body),
		"in a fragment":       ipv6(laptop6, server6, protoGossip, body, extFrag(1, 0, true)),
		"behind a long chain": ipv6(laptop6, server6, protoGossip, body, extOpts(60), extOpts(60), extOpts(60), extOpts(60), extOpts(60), extOpts(60), extOpts(60), extOpts(60), extOpts(60)),
	} {
		if f.admit(pkt) {
			t.Errorf("no network: gossip %s reaches the system", name)
		}
	}
	if !f.admit(ipv6(laptop6, server6, protoTCP, tcpHeader(1, 22, tcpSYN), extOpts(extDestOpts))) || !f.admit(ipv4(protoUDP, laptop, server, 1, 2, 0)) {
		t.Error("no network: a packet that is no gossip is dropped")
	}
}

func FuzzAdmit(f *testing.F) {
	f.Add(ipv4(protoTCP, laptop, server, 1, 22, tcpSYN))
	f.Add(ipv6(laptop6, server6, protoTCP, tcpHeader(1, 22, tcpSYN), extOpts(extHopByHop), extFrag(1, 0, true)))
	f.Add(ipv6(laptop6, server6, protoICMPv6, append([]byte{1, 0, 0, 0, 0, 0, 0, 0}, ipv6(server6, laptop6, protoUDP, make([]byte, 8))...)))
	f.Add(frag4(ipv4(protoUDP, laptop, server, 1, 53, 0), 1, 0, true))
	f.Add(GossipPacket(laptop6.Addrs[0], server6.Addrs[0], []byte{1, 2}))
	nk, _ := cert.NewNetworkPrivate()
	pol := signPolicy(f, nk, 1, laptopsToServers)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, fl := range []*Filter{filterAt(t, pol, server, laptop), filterAt(t, pol, server6, laptop6)} {
			fl.OnGossip(func(netip.Addr, []byte) {})
			fl.sent(b)
			fl.admit(b)
		}
		if p, ok := parse(b); ok && p.proto == protoGossip && p.hidden {
			t.Fatal("a hidden chain parses as gossip")
		}
	})
}

// TestAdmitAllocatesNothing: the data path's per-packet work allocates
// nothing: a flow's packets, a later fragment, a member's packet with no
// policy held.
func TestAdmitAllocatesNothing(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(t, signPolicy(t, nk, 1, laptopsToServers), server, laptop)
	syn, ack := ipv4(protoTCP, laptop, server, 40000, 22, tcpSYN), ipv4(protoTCP, laptop, server, 40000, 22, tcpACK)
	first, later := frag4(ipv4(protoTCP, laptop, server, 40001, 22, tcpSYN), 7, 0, true), frag4(ipv4(protoTCP, laptop, server, 0, 0, 0), 7, 3, false)
	f.admit(syn)
	f.admit(first)
	noPolicy := filterAt(t, nil, server, laptop)
	reply := ipv4(protoTCP, server, laptop, 22, 40000, tcpACK)
	if n := testing.AllocsPerRun(100, func() {
		f.admit(ack)
		f.admit(later)
		f.sent(reply)
		noPolicy.admit(ack)
	}); n != 0 {
		t.Errorf("%v allocations per round of packets, want 0", n)
	}
}

func BenchmarkAdmitFlow(b *testing.B) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(b, signPolicy(b, nk, 1, laptopsToServers), server, laptop)
	pkt := ipv4(protoTCP, laptop, server, 40000, 22, tcpACK)
	f.admit(ipv4(protoTCP, laptop, server, 40000, 22, tcpSYN))
	for b.Loop() {
		f.admit(pkt)
	}
}

// TestRepliesOpenNothing: this machine's answers to a member's packets
// whose flow the table dropped (a reset, a SYN-ACK, an ICMP error) do not
// become flows of its own: a member past its share cannot take the
// reserve through them.
func TestRepliesOpenNothing(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(t, signPolicy(t, nk, 1, laptopsToServers), server, laptop)
	for sport := range uint16(100) {
		f.sent(ipv4(protoTCP, server, laptop, 22, 1000+sport, tcpRST|tcpACK))
		f.sent(ipv4(protoTCP, server, laptop, 22, 2000+sport, tcpSYN|tcpACK))
		f.sent(append(icmpEcho(server, laptop, 3, 0), ipv4(protoUDP, laptop, server, 3000+sport, 9, 0)[:28]...))
	}
	if f.Flows() != 0 {
		t.Errorf("%d flows from this machine's replies, want 0", f.Flows())
	}
}

// TestRepliesChargedToSender: a member allowed udp/53 sends from 10,000
// source ports; this machine answers each after the member's flows past
// its share were evicted. The answers are charged to that member: it
// holds no more than its share, whatever this machine sends back.
func TestRepliesChargedToSender(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(t, signPolicy(t, nk, 1, "[Rule]\nFrom = *\nTo = *\nAllow = udp/53\n"), server, laptop, server2)
	for sport := range uint16(10000) {
		f.admit(ipv4(protoUDP, laptop, server, 1000+sport, 53, 0))
	}
	for sport := range uint16(10000) {
		f.sent(ipv4(protoUDP, server, laptop, 53, 1000+sport, 0))
	}
	t.Logf("%d flows after 10,000 queries and their answers", f.Flows())
	if f.Flows() > 4096 {
		t.Errorf("%d flows for one member's queries and their answers, want at most its share", f.Flows())
	}
	// This machine's own UDP to another member is not crowded out.
	f.sent(ipv4(protoUDP, server, server2, 5000, 53, 0))
	if !f.admit(ipv4(protoUDP, server2, server, 53, 5000, 0)) {
		t.Error("the answer to this machine's own query to another member refused")
	}
}

// TestFilterConcurrent: the data path's goroutines (one per peer in
// wireguard-go) admit and send while the control loop ticks and sets
// policies; run with -race.
func TestFilterConcurrent(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	pols := []*cert.Document{signPolicy(t, nk, 1, laptopsToServers), signPolicy(t, nk, 2, "[Rule]\nFrom = *\nTo = *\nAllow = any\n")}
	f := filterAt(t, pols[0], server, laptop, server2)
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 20000 {
				sport := uint16(g*20000 + i)
				f.admit(ipv4(protoTCP, laptop, server, sport, 22, tcpSYN))
				f.sent(ipv4(protoTCP, server, laptop, 22, sport, tcpSYN|tcpACK))
				f.admit(frag4(ipv4(protoUDP, server2, server, sport, 53, 0), sport, 0, true))
				f.admit(frag4(ipv4(protoUDP, server2, server, 0, 0, 0), sport, 2, false))
			}
		}()
	}
	now := time.Now()
	for i := range 200 {
		f.Tick(now.Add(time.Duration(i) * 11 * time.Second))
		f.Set(pols[i%2], server, map[netip.Addr]*Member{laptop.Addrs[0]: laptop, server2.Addrs[0]: server2})
		_ = f.Flows()
	}
	for range 4 {
		<-done
	}
}
