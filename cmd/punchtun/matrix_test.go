//go:build linux

package main

import "testing"

// TestNATMatrix checks the path every kind of pair reaches, one lab per
// pair of router kinds: a1 and a2 sit behind router A, b1 behind router B,
// pub and rv on the public side.
func TestNATMatrix(t *testing.T) {
	for _, lc := range []struct {
		prefix, natA, natB string
		cases              []pairCase
	}{
		{"pth", "hard", "hard", []pairCase{
			{name: "hard-hard", hostA: "a1", hostB: "b1", wantPath: "relay", wantReason: "both NATs map per destination"},
			{name: "none-hard", hostA: "pub", hostB: "b1", wantPath: "direct"},
		}},
		{"pte", "easy", "hard", []pairCase{
			{name: "easy-hard", hostA: "a1", hostB: "b1", wantPath: "direct"},
		}},
		{"ptk", "blocked", "easy", []pairCase{
			{name: "blocked-easy", hostA: "a1", hostB: "b1", wantPath: "relay-tcp", wantPathB: "relay", wantReason: "UDP blocked on this network"},
			{name: "blocked-none", hostA: "a1", hostB: "pub", wantPath: "relay-tcp", wantPathB: "relay", wantReason: "UDP blocked on this network"},
			{name: "blocked-same-lan", hostA: "a1", hostB: "a2", wantPath: "lan"},
		}},
		{"ptc", "cone", "hard", []pairCase{
			{name: "cone-hard", hostA: "a1", hostB: "b1", wantPath: "direct", portA: 51820},
			{name: "none-cone", hostA: "pub", hostB: "a1", wantPath: "direct", portB: 51820},
		}},
	} {
		t.Run(lc.natA+"-"+lc.natB, func(t *testing.T) {
			l := newLab(t, lc.prefix, lc.natA, lc.natB)
			runPairs(t, l, l.startRendezvous(), lc.cases)
		})
	}
}
