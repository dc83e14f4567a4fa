//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// TestFirstHandshakeLost: the first two WireGuard handshake initiations
// and the first two responses between a new pair are lost on the way
// (nftables on b's router, which every packet between the two crosses,
// directly or through the rendezvous), on each kind of path: direct
// (relayed handshakes all dropped, so that the handshake must go direct),
// through the rendezvous's UDP relay (hard/hard), over TCP to it (a
// network that blocks UDP: the drops hit the UDP leg between the
// rendezvous and b), and through a TURN server, the rendezvous relaying
// nothing (hard/hard, and a network that blocks UDP and reaches it over
// TCP: the drops hit b's TURN leg, in whichever of TURN's framings the
// messages take there). b is up already, as in
// TestUDPBlockedStartWithinASecond; the first ping must be answered within
// a second of a's start, both ways. WireGuard makes a new initiation only
// 5 s after the last: before, the initiation and its one copy both lost
// cost those 5 s.
func TestFirstHandshakeLost(t *testing.T) {
	t.Parallel()
	const lost = 2 // initiations, and responses
	for _, tc := range []struct {
		name, prefix, natA, natB string
		dropRelayed              bool // every relayed handshake message, not the first two
		turn                     bool // relayed by coturn; the rendezvous relays nothing
	}{
		{"direct", "pthd", "easy", "easy", true, false},
		{"relay", "pthr", "hard", "hard", false, false},
		{"relay-tcp", "ptht", "blocked", "easy", false, false},
		{"turn", "pthu", "hard", "hard", false, true},
		{"turn-tcp", "pthv", "blocked", "easy", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, tc.prefix, tc.natA, tc.natB)
			var rvKey key.Private
			if tc.turn {
				// What goes to or comes from the TURN server: its relayed
				// addresses and its TURN port.
				l.dropFirstHandshakes("natb", lost, false, netip.MustParseAddrPort(turnAddr).Addr().String())
				l.startCoturn("coturn", turnSecret)
				_, rvKey = l.startTURNRendezvous(turnSecret, false)
			} else {
				l.dropFirstHandshakes("natb", lost, tc.dropRelayed, "")
				rvKey = l.startRendezvous()
			}
			a := newPeer(t, "a1", tc.prefix+"a", "100.64.0.1")
			b := newPeer(t, "b1", tc.prefix+"b", "100.64.0.2")
			l.up(b, a, rvKey) // its first contact with a comes with a's start
			conf := l.writeConfig(a, b, rvKey)
			// From a's start on, every bound is timed: a quiet section
			// begun before it.
			defer quietFrom(t)()
			t0 := time.Now()
			l.startPeer(a, conf, a.iface)
			from := "the start"
			if tc.natA == "blocked" {
				// Behind a network that blocks UDP there is no path before
				// a has found so and registered over TCP (about half a
				// second, TestUDPBlockedStartWithinASecond): the lost
				// handshakes are timed from there.
				t0, from = l.registeredAt(a), "the registration over TCP"
			}
			ab := l.answeredWithin(a, b, t0, 20*time.Second)
			ba := l.answeredWithin(b, a, t0, 20*time.Second)
			rules := l.run("natb", "nft", "list", "table", "inet", "ptfirst")
			t.Logf("%s-%s: first reply a → b %v, b → a %v after %s; natb: %s", tc.natA, tc.natB,
				ab.Round(time.Millisecond), ba.Round(time.Millisecond), from, counters(rules))
			if ab > time.Second || ba > time.Second {
				t.Errorf("first reply a → b %v, b → a %v after %s, want within 1 s", ab, ba, from)
			}
			// The rules must have met the messages, in whatever framing
			// they came: else nothing was lost, and this tests nothing.
			for _, chain := range []string{"initiations", "responses"} {
				if n := l.droppedBy("natb", chain); n != lost {
					t.Errorf("natb dropped %d handshake %s, want %d", n, chain, lost)
				}
			}
			if tc.turn {
				viaA := turnUDP
				if tc.natA == "blocked" {
					viaA = turnTCP
				}
				l.waitVia(a, viaA, time.Second)
				l.waitVia(b, turnUDP, time.Second)
			}
		})
	}
}

// registeredAt polls p's status until it is registered with a rendezvous
// and returns when it saw so.
func (l *lab) registeredAt(p *peerSpec) time.Time {
	l.t.Helper()
	var at time.Time
	eventually(l.t, 10*time.Second, "registered", func() error {
		st, err := l.status(p)
		if err != nil {
			return err
		}
		for _, r := range st.Rendezvous {
			if r.Registered {
				at = time.Now()
				return nil
			}
		}
		return fmt.Errorf("%s: not registered", p.iface)
	})
	return at
}

// dropFirstHandshakes makes router drop the first n WireGuard handshake
// initiations and the first n responses it forwards, in any of the forms
// they travel in (handshakeFramings); with allRelayed, every one in a
// rendezvous's relay frame. The first n of each kind count together,
// whatever their framing: the rule that drops them counts packets
// (numgen inc), where a quota would count bytes. With a host, only
// packets to or from it count.
func (l *lab) dropFirstHandshakes(router string, n int, allRelayed bool, host string) {
	l.t.Helper()
	var rules string
	if host != "" {
		rules = fmt.Sprintf("\t\tip saddr != %s ip daddr != %s return\n", host, host)
	}
	for _, f := range handshakeFramings {
		for _, m := range []struct {
			typ, size int
			chain     string
		}{{1, 148, "initiations"}, {2, 92, "responses"}} { // WireGuard's message sizes
			verdict := "jump " + m.chain
			if allRelayed && f.name == "relay" {
				verdict = "drop"
			}
			rules += fmt.Sprintf("\t\tmeta l4proto udp %s @th,%d,32 0x%02x000000 counter %s comment %q\n",
				f.match(m.size), 8*(8+f.header), m.typ, verdict, f.name)
		}
	}
	first := fmt.Sprintf("\t\tnumgen inc mod 1000000 < %d counter drop\n", n)
	file := filepath.Join(l.dir, "first-handshakes.nft")
	os.WriteFile(file, []byte("table inet ptfirst {\n"+
		"\tchain initiations {\n"+first+"\t}\n\tchain responses {\n"+first+"\t}\n"+
		"\tchain drops {\n\t\ttype filter hook forward priority -10;\n"+rules+"\t}\n}\n"), 0o600)
	l.run(router, "nft", "-f", file)
}

// handshakeFramings are the forms a WireGuard handshake message travels
// in: header bytes before it in the UDP payload, and match, the rest of
// an nft rule that tells the form for a message of size bytes.
var handshakeFramings = []struct {
	name   string
	header int
	match  func(size int) string
}{
	// A bare UDP datagram: a direct path, and a TURN server's relayed
	// address to the peer's NAT.
	{"bare", 0, func(size int) string { return fmt.Sprintf("udp length %d", 8+size) }},
	// The rendezvous's relay; also the UDP leg of a TCP-relayed pair.
	{"relay", wire.RelayHeaderLen, func(size int) string { return fmt.Sprintf("udp length %d", 8+wire.RelayHeaderLen+size) }},
	// TURN ChannelData (RFC 8656 12.4), between a TURN client and its
	// server: a channel number (first bits 01) and the length.
	{"turn-channel", 4, func(size int) string {
		return fmt.Sprintf("udp length %d @th,64,2 1 @th,80,16 %d", 12+size, size)
	}},
	// A TURN Send or Data indication (methods 6 and 7, class indication)
	// whose first attribute is DATA (0x0013): pion's and coturn's.
	{"turn-indication", 24, func(size int) string {
		return fmt.Sprintf("@th,64,16 { 0x0016, 0x0017 } @th,96,32 0x2112a442 @th,224,32 0x0013%04x", size)
	}},
}

// droppedBy is how many packets router's chain of dropFirstHandshakes
// dropped.
func (l *lab) droppedBy(router, chain string) int {
	l.t.Helper()
	listing := l.run(router, "nft", "list", "chain", "inet", "ptfirst", chain)
	var n int
	i := strings.Index(listing, "counter packets")
	if _, err := fmt.Sscanf(listing[max(i, 0):], "counter packets %d", &n); i < 0 || err != nil {
		l.t.Fatalf("%s: no counter in %q", router, listing)
	}
	return n
}

// counters is the rules of an nft listing with their counters, for the
// log.
func counters(listing string) string {
	var out []string
	for _, line := range strings.Split(listing, "\n") {
		if strings.Contains(line, "counter") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, "; ")
}
