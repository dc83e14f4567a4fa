//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
)

// TestFirstHandshakeLost: the first two WireGuard handshake initiations
// and the first two responses between a new pair are lost on the way
// (nftables on b's router, which every packet between the two crosses,
// directly or through the rendezvous), on each kind of path: direct
// (relayed handshakes all dropped, so that the handshake must go direct),
// through the rendezvous's UDP relay (hard/hard), and over TCP to it (a
// network that blocks UDP: the drops hit the UDP leg between the
// rendezvous and b). b is up already, as in
// TestUDPBlockedStartWithinASecond; the first ping must be answered within
// a second of a's start, both ways. WireGuard makes a new initiation only
// 5 s after the last: before, the initiation and its one copy both lost
// cost those 5 s.
func TestFirstHandshakeLost(t *testing.T) {
	for _, tc := range []struct {
		name, prefix, natA, natB string
		dropRelayed              bool // every relayed handshake message, not the first two
	}{
		{"direct", "pthd", "easy", "easy", true},
		{"relay", "pthr", "hard", "hard", false},
		{"relay-tcp", "ptht", "blocked", "easy", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, tc.prefix, tc.natA, tc.natB)
			l.dropFirstHandshakes("natb", 2, tc.dropRelayed)
			rvKey := l.startRendezvous()
			a := newPeer(t, "a1", tc.prefix+"a", "100.64.0.1")
			b := newPeer(t, "b1", tc.prefix+"b", "100.64.0.2")
			l.up(b, a, rvKey) // its first contact with a comes with a's start
			conf := l.writeConfig(a, b, rvKey)
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
			dropped := l.run("natb", "nft", "list", "table", "inet", "ptfirst")
			t.Logf("%s-%s: first reply a → b %v, b → a %v after %s; natb: %s", tc.natA, tc.natB,
				ab.Round(time.Millisecond), ba.Round(time.Millisecond), from, quotasUsed(dropped))
			if ab > time.Second || ba > time.Second {
				t.Errorf("first reply a → b %v, b → a %v after %s, want within 1 s", ab, ba, from)
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
// initiations and the first n responses it forwards, in each of the forms
// they travel in: a bare UDP datagram (a direct path) and a relay frame
// (the rendezvous's relay; also the UDP leg of a TCP-relayed pair). With
// allRelayed, every relayed one is dropped.
func (l *lab) dropFirstHandshakes(router string, n int, allRelayed bool) {
	l.t.Helper()
	const initLen, respLen = 148, 92 // WireGuard's message sizes
	var rules string
	for _, f := range []struct {
		header int // bytes before the WireGuard message in the UDP payload
		all    bool
	}{{0, false}, {wire.RelayHeaderLen, allRelayed}} {
		for _, m := range []struct {
			typ, size int
		}{{1, initLen}, {2, respLen}} {
			udpLen := 8 + f.header + m.size
			quota := fmt.Sprintf("quota until %d bytes ", n*(20+udpLen)) // the IPv4 packet's bytes
			if f.all {
				quota = ""
			}
			rules += fmt.Sprintf("\t\tudp length %d @th,%d,8 %d %scounter drop\n", udpLen, 8*(8+f.header), m.typ, quota)
		}
	}
	file := filepath.Join(l.dir, "first-handshakes.nft")
	os.WriteFile(file, []byte("table inet ptfirst {\n\tchain drops {\n\t\ttype filter hook forward priority -10;\n"+rules+"\t}\n}\n"), 0o600)
	l.run(router, "nft", "-f", file)
}

// quotasUsed is the rules of an nft listing with their counters, for the
// log.
func quotasUsed(listing string) string {
	var out []string
	for _, line := range strings.Split(listing, "\n") {
		if strings.Contains(line, "counter") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, "; ")
}
