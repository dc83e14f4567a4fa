//go:build linux

package main

import "testing"

// TestNATMatrix checks the path every kind of pair reaches, one lab per
// pair of router kinds: a1 and a2 sit behind router A, b1 behind router B,
// pub and rv on the public side (no NAT). Kinds: easy (endpoint-independent
// mapping), hard (a random port per destination), cone (easy plus a
// forwarded port 51820), blocked (no UDP out); same LAN is a1 with a2.
// TestTunnel covers easy/easy, none/easy and same LAN behind easy.
// scripts/natmatrix.sh runs this test and prints the table.
func TestNATMatrix(t *testing.T) {
	const (
		noUDP    = "UDP blocked on this network"
		bothHard = "both NATs map per destination"
	)
	for _, lc := range []struct {
		prefix, natA, natB string
		cases              []pairCase
	}{
		{"pte", "easy", "hard", []pairCase{
			{name: "easy-hard", hostA: "a1", hostB: "b1", wantPath: "direct", repeat: true},
			{name: "none-none", hostA: "pub", hostB: "rv", wantPath: "direct"},
		}},
		{"pth", "hard", "hard", []pairCase{
			{name: "hard-hard", hostA: "a1", hostB: "b1", wantPath: "relay", wantReason: bothHard},
			{name: "none-hard", hostA: "pub", hostB: "b1", wantPath: "direct"},
			{name: "same-lan-hard", hostA: "a1", hostB: "a2", wantPath: "lan"},
		}},
		{"ptc", "cone", "hard", []pairCase{
			{name: "cone-hard", hostA: "a1", hostB: "b1", wantPath: "direct", portA: 51820},
			{name: "none-cone", hostA: "pub", hostB: "a1", wantPath: "direct", portB: 51820},
		}},
		{"ptec", "easy", "cone", []pairCase{
			{name: "easy-cone", hostA: "a1", hostB: "b1", wantPath: "direct", portB: 51820},
		}},
		{"ptcc", "cone", "cone", []pairCase{
			{name: "cone-cone", hostA: "a1", hostB: "b1", wantPath: "direct", portA: 51820, portB: 51820},
		}},
		{"ptk", "blocked", "easy", []pairCase{
			{name: "blocked-easy", hostA: "a1", hostB: "b1", wantPath: "relay-tcp", wantPathB: "relay", wantReason: noUDP},
			{name: "blocked-none", hostA: "a1", hostB: "pub", wantPath: "relay-tcp", wantPathB: "relay", wantReason: noUDP},
			{name: "same-lan-blocked", hostA: "a1", hostB: "a2", wantPath: "lan"},
		}},
		{"ptkh", "blocked", "hard", []pairCase{
			{name: "blocked-hard", hostA: "a1", hostB: "b1", wantPath: "relay-tcp", wantPathB: "relay", wantReason: noUDP},
		}},
		{"ptkc", "blocked", "cone", []pairCase{
			{name: "blocked-cone", hostA: "a1", hostB: "b1", wantPath: "relay-tcp", wantPathB: "relay", wantReason: noUDP, portB: 51820},
		}},
		{"ptkk", "blocked", "blocked", []pairCase{
			{name: "blocked-blocked", hostA: "a1", hostB: "b1", wantPath: "relay-tcp", wantReason: noUDP},
		}},
	} {
		t.Run(lc.natA+"-"+lc.natB, func(t *testing.T) {
			l := newLab(t, lc.prefix, lc.natA, lc.natB)
			runPairs(t, l, l.startRendezvous(), lc.cases)
		})
	}
}

// TestIPv6 puts global IPv6 addresses on every host, behind routers that
// route them without NAT but firewall what the LAN did not ask for: two
// peers whose IPv4 NATs both map per destination, which would be relayed,
// punch through the IPv6 firewalls instead and talk directly over IPv6.
func TestIPv6(t *testing.T) {
	l := newLab(t, "pt6", "hard", "hard", "ipv6")
	runPairs(t, l, l.startRendezvous(), []pairCase{
		{name: "ipv6-behind-hard-nats", hostA: "a1", hostB: "b1", wantPath: "direct", wantEndpoint: "[2001:db8:b::2]:"},
	})
}
