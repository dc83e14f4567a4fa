package policy

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

const laptopsToServers = `# laptops may ssh into servers and ping them
[Rule]
From = group:laptops
To = group:servers
Allow = tcp/22, icmp

[Rule]
From = name:ci, 10.7.0.0/24
To = *
Allow = tcp/8000-8100, udp/53
`

func TestParseRules(t *testing.T) {
	rules, err := ParseRules("rules.ini", strings.NewReader(laptopsToServers))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 {
		t.Fatalf("%d rules, want 2", len(rules))
	}
	want := []string{
		"From = group:laptops; To = group:servers; Allow = tcp/22, icmp",
		"From = name:ci, 10.7.0.0/24; To = *; Allow = tcp/8000-8100, udp/53",
	}
	for i, r := range rules {
		if r.String() != want[i] {
			t.Errorf("rule %d = %q, want %q", i, r, want[i])
		}
	}
}

func TestParseRulesErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"[Rule]\nFrom = *\nTo = *\nAllow = tcp/0\n", "r.ini:4: Allow: \"tcp/0\": port \"0\": want 1 to 65535"},
		{"[Rule]\nFrom = *\nTo = *\nAllow = icmp/3\n", "r.ini:4: Allow: \"icmp/3\": icmp takes no port"},
		{"[Rule]\nFrom = *\nTo = *\nAllow = tcp/9-8\n", "r.ini:4: Allow: \"tcp/9-8\": the range ends before it starts"},
		{"[Rule]\nFrom = *\nTo = *\nAllow = sctp\n", "r.ini:4: Allow: \"sctp\": want any"},
		{"[Rule]\nFrom = group:Laptops\nTo = *\nAllow = any\n", "r.ini:2: From: \"Laptops\": only a-z"},
		{"[Rule]\nFrom = 10.0.0.1/8\nTo = *\nAllow = any\n", "r.ini:2: From: \"10.0.0.1/8\": host bits set; did you mean 10.0.0.0/8?"},
		{"[Rule]\nFrom = *\nAllow = any\n\n[Rule]\n", "r.ini:1: [Rule] has no To ="},
		{"[Rule]\nFrom = *\nTo = *\nAllow = any\n[Rule]\nFrom = *\nTo = *\n", "r.ini:5: [Rule] has no Allow ="},
		{"[Peer]\n", "r.ini:1: unknown section \"[Peer]\"; want [Rule]"},
		{"[Rule]\nPort = 22\n", "r.ini:2: Port: unknown key"},
	} {
		_, err := ParseRules("r.ini", strings.NewReader(tc.in))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.in, err, tc.want)
		}
	}
}

var (
	laptop  = &Member{Name: "laptop", Groups: []string{"laptops"}, Addrs: []netip.Addr{netip.MustParseAddr("10.7.0.1")}}
	server  = &Member{Name: "server", Groups: []string{"servers"}, Addrs: []netip.Addr{netip.MustParseAddr("10.7.0.2")}}
	server2 = &Member{Name: "server2", Groups: []string{"servers"}, Addrs: []netip.Addr{netip.MustParseAddr("10.7.0.3")}}
)

func signPolicy(t testing.TB, nk cert.NetworkPrivate, seq uint64, rules string) *cert.Document {
	t.Helper()
	rs, err := ParseRules("r.ini", strings.NewReader(rules))
	if err != nil {
		t.Fatal(err)
	}
	d, err := cert.SignPolicy(nk, seq, rs)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// filterAt is self's filter with the others as members, under rules.
func filterAt(t testing.TB, pol *cert.Document, self *Member, others ...*Member) *Filter {
	f := New()
	members := map[netip.Addr]*Member{}
	for _, m := range others {
		members[m.Addrs[0]] = m
	}
	f.Set(pol, self, members)
	return f
}

// ipv4 builds a packet from src:sport to dst:dport.
func ipv4(proto uint8, src, dst *Member, sport, dport uint16, flags byte) []byte {
	pkt := make([]byte, 40)
	pkt[0], pkt[9] = 0x45, proto
	copy(pkt[12:16], src.Addrs[0].AsSlice())
	copy(pkt[16:20], dst.Addrs[0].AsSlice())
	binary.BigEndian.PutUint16(pkt[20:], sport)
	binary.BigEndian.PutUint16(pkt[22:], dport)
	pkt[33] = flags
	return pkt
}

func icmpEcho(src, dst *Member, typ byte, id uint16) []byte {
	pkt := make([]byte, 28)
	pkt[0], pkt[9] = 0x45, protoICMP
	copy(pkt[12:16], src.Addrs[0].AsSlice())
	copy(pkt[16:20], dst.Addrs[0].AsSlice())
	pkt[20] = typ
	binary.BigEndian.PutUint16(pkt[24:], id)
	return pkt
}

func TestFilterStateful(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	pol := signPolicy(t, nk, 1, laptopsToServers)
	atServer := filterAt(t, pol, server, laptop, server2)
	atLaptop := filterAt(t, pol, laptop, server, server2)

	// laptop → server ssh: the server admits it by rule; its reply leaves
	// the server (tracked), and the laptop admits it as a reply to the flow
	// it opened.
	syn := ipv4(protoTCP, laptop, server, 40000, 22, 0x02)
	atLaptop.sent(syn)
	if !atServer.admit(syn) {
		t.Fatal("server refuses laptop's ssh")
	}
	synack := ipv4(protoTCP, server, laptop, 22, 40000, 0x12)
	atServer.sent(synack)
	if !atLaptop.admit(synack) {
		t.Fatal("laptop refuses the reply of its own ssh connection")
	}
	if !atServer.admit(ipv4(protoTCP, laptop, server, 40000, 22, 0x10)) {
		t.Fatal("server refuses the rest of the connection")
	}
	// server → laptop: no rule, no flow.
	if atLaptop.admit(ipv4(protoTCP, server, laptop, 40001, 22, 0x02)) {
		t.Fatal("laptop admits a connection the server opened")
	}
	if atServer.admit(ipv4(protoTCP, laptop, server, 40000, 80, 0x02)) {
		t.Fatal("server admits laptop's connection to port 80")
	}
	if atServer.admit(ipv4(protoTCP, server2, server, 40000, 22, 0x02)) {
		t.Fatal("server admits another server's ssh")
	}
	// ping: laptop → server by rule, and its reply; server → laptop refused.
	atLaptop.sent(icmpEcho(laptop, server, 8, 7))
	if !atServer.admit(icmpEcho(laptop, server, 8, 7)) || !atLaptop.admit(icmpEcho(server, laptop, 0, 7)) {
		t.Fatal("laptop's ping or its reply refused")
	}
	if atLaptop.admit(icmpEcho(server, laptop, 8, 9)) {
		t.Fatal("laptop admits the server's ping")
	}
	if got := atLaptop.Dropped[DropNoRule].Load(); got != 2 {
		t.Errorf("laptop counted %d drops, want 2", got)
	}
	if got := atServer.Allowed(); got[0] != 2 || got[1] != 0 {
		t.Errorf("server's rules let in %v flows, want [2 0]", got)
	}
	// A later fragment has no port: a port rule does not cover it.
	frag := ipv4(protoTCP, laptop, server, 0, 0, 0)
	frag[7] = 10
	if atServer.admit(frag) {
		t.Error("server admits a later fragment under a port rule")
	}
	if atServer.admit([]byte{0x45, 0, 0}) {
		t.Error("server admits a runt")
	}
}

func TestFilterNoPolicyAndStaticPeers(t *testing.T) {
	f := filterAt(t, nil, laptop, server)
	if !f.admit(ipv4(protoTCP, server, laptop, 1, 22, 0x02)) {
		t.Fatal("no policy: a member's packet is refused")
	}
	nk, _ := cert.NewNetworkPrivate()
	f = filterAt(t, signPolicy(t, nk, 1, laptopsToServers), laptop)
	if !f.admit(ipv4(protoTCP, server, laptop, 1, 22, 0x02)) {
		t.Fatal("a static peer's packet (no member) is judged by the network's policy")
	}
}

func TestFilterNewPolicyJudgesAgain(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	all := "[Rule]\nFrom = *\nTo = *\nAllow = any\n"
	f := filterAt(t, signPolicy(t, nk, 1, all), laptop, server)
	in := ipv4(protoTCP, server, laptop, 40000, 22, 0x02)
	if !f.admit(in) {
		t.Fatal("allow-all refuses")
	}
	// laptop's own connection to the server, opened under the old policy.
	out := ipv4(protoTCP, laptop, server, 50000, 22, 0x02)
	f.sent(out)
	f.Set(signPolicy(t, nk, 2, laptopsToServers), laptop, map[netip.Addr]*Member{server.Addrs[0]: server})
	if f.admit(ipv4(protoTCP, server, laptop, 40000, 22, 0x10)) {
		t.Fatal("a flow let in by the old policy passes under the new one")
	}
	if !f.admit(ipv4(protoTCP, server, laptop, 22, 50000, 0x12)) {
		t.Fatal("the reply to laptop's own connection is refused after the new policy")
	}
}

func TestFilterTimeouts(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(t, signPolicy(t, nk, 1, laptopsToServers), laptop, server)
	start := time.Now()
	f.sent(ipv4(protoUDP, laptop, server, 5000, 53, 0))
	f.Tick(start.Add(udpIdle - time.Second))
	if !f.admit(ipv4(protoUDP, server, laptop, 53, 5000, 0)) {
		t.Fatal("a UDP reply within the timeout is refused")
	}
	f.Tick(start.Add(2*udpIdle + time.Second))
	if f.admit(ipv4(protoUDP, server, laptop, 53, 5000, 0)) {
		t.Fatal("a UDP reply long after the flow went idle passes")
	}
	if f.Flows() != 0 {
		t.Errorf("%d flows left after the sweep", f.Flows())
	}
}

func TestICMPErrorOfOwnFlow(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(t, signPolicy(t, nk, 1, laptopsToServers), laptop, server)
	out := ipv4(protoUDP, laptop, server, 5000, 9, 0)[:28]
	f.sent(out)
	unreach := append(icmpEcho(server, laptop, 3, 0), out...)
	if !f.admit(unreach) {
		t.Fatal("port unreachable about laptop's own UDP flow refused")
	}
	other := append(icmpEcho(server, laptop, 3, 0), ipv4(protoUDP, laptop, server, 5001, 9, 0)[:28]...)
	if f.admit(other) {
		t.Fatal("an ICMP error about a flow laptop never had passes")
	}
}

func TestGossipIntercepted(t *testing.T) {
	f := filterAt(t, nil, laptop, server)
	var got []byte
	f.OnGossip(func(src netip.Addr, body []byte) {
		if src != server.Addrs[0] {
			t.Errorf("gossip from %v", src)
		}
		got = append([]byte(nil), body...)
	})
	body := Gossip{Kind: GossipSummary, Summary: cert.Summary{PolicySeq: 7}, Answer: true}.Append(nil)
	if f.admit(GossipPacket(server.Addrs[0], laptop.Addrs[0], body)) {
		t.Fatal("a gossip packet reached the system")
	}
	g, err := ParseGossip(got)
	if err != nil || g.Summary.PolicySeq != 7 || !g.Answer {
		t.Fatalf("gossip = %+v, %v", g, err)
	}
	// From a non-member (a static peer's address): dropped, not handed on.
	got = nil
	if f.admit(GossipPacket(server2.Addrs[0], laptop.Addrs[0], body)) || got != nil {
		t.Fatal("gossip from a non-member handed on or delivered")
	}
	v6 := GossipPacket(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), body)
	if p, ok := parse(v6); !ok || p.proto != protoGossip || string(p.payload) != string(body) {
		t.Fatal("IPv6 gossip packet does not parse back")
	}
}

func FuzzParseGossip(f *testing.F) {
	f.Add(Gossip{Kind: GossipSummary}.Append(nil))
	f.Add(Gossip{Kind: GossipDocument, Doc: []byte{1, 2}}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := ParseGossip(b)
		if err == nil && string(g.Append(nil)) != string(b) {
			t.Fatalf("%x parses, re-encodes to %x", b, g.Append(nil))
		}
	})
}

func FuzzParsePacket(f *testing.F) {
	f.Add(ipv4(protoTCP, laptop, server, 1, 2, 0))
	f.Add(append(icmpEcho(server, laptop, 3, 0), ipv4(protoUDP, laptop, server, 5000, 9, 0)[:28]...))
	f.Fuzz(func(t *testing.T, b []byte) { parse(b) })
}

// TestFlowTableBounded: past maxFlows the table takes no new flow, and
// counts it; a sweep of timed-out flows makes room again. (TCP
// connections this machine opens: its UDP flows are charged to the
// member they go to, bounded by its share, TestRepliesChargedToSender.)
func TestFlowTableBounded(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(t, signPolicy(t, nk, 1, laptopsToServers), laptop, server)
	now := time.Now()
	f.Tick(now)
	for i := range maxFlows + 1 {
		f.sent(ipv4(protoTCP, laptop, server, uint16(i), uint16(i>>16)+1, tcpSYN))
	}
	if f.Flows() != maxFlows || f.FlowsRefused() != 1 {
		t.Fatalf("%d flows, %d refused; want %d and 1", f.Flows(), f.FlowsRefused(), maxFlows)
	}
	f.Tick(now.Add(udpIdle + time.Minute))
	if f.Flows() != 0 {
		t.Fatalf("%d flows after they all timed out", f.Flows())
	}
}
