//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// The lab's TURN server: Debian's coturn on the public host.
const (
	turnAddr   = "203.0.113.20:3478"
	turnUDP    = "turn:" + turnAddr
	turnTCP    = "turn:" + turnAddr + "?transport=tcp"
	turnSecret = "lab-turn-secret"
)

// startCoturn runs coturn on the public host with secret as its
// static-auth-secret (TURN's REST scheme, as an operator runs it), and
// returns once it listens on UDP and TCP.
func (l *lab) startCoturn(name, secret string) *proc {
	l.t.Helper()
	if _, err := os.Stat("/usr/bin/turnserver"); err != nil {
		skipLab(l.t, "TURN lab tests need coturn's turnserver: install the packages scripts/deps.sh names")
	}
	p := l.start("pub", name, "turnserver", "-n", "--listening-ip=203.0.113.20", "--relay-ip=203.0.113.20",
		"--listening-port=3478", "--use-auth-secret", "--static-auth-secret="+secret, "--realm=punchtun.lab",
		"--no-tls", "--no-dtls", "--no-cli", "--log-file=stdout", "--simple-log",
		"--pidfile="+filepath.Join(l.dir, name+".pid"), "--userdb="+filepath.Join(l.dir, name+".db"))
	eventually(l.t, 10*time.Second, "coturn listening", func() error {
		out, _ := l.cmd("pub", "ss", "-Hlntu", "sport = :3478").Output()
		if strings.Count(string(out), "203.0.113.20:3478") < 2 {
			return fmt.Errorf("not on UDP and TCP yet: %q", out)
		}
		return nil
	})
	return p
}

// startTURNRendezvous starts the rendezvous handing out the lab's TURN
// server (UDP and TCP) with secret, relaying itself or not.
func (l *lab) startTURNRendezvous(secret string, relay bool) (*proc, key.Private) {
	l.t.Helper()
	file := filepath.Join(l.dir, "turn-secret")
	os.WriteFile(file, []byte(secret+"\n"), 0o600)
	return l.launchRendezvousWith("--listen", rendezvousAddr, "--listen", rendezvousAddr2, fmt.Sprintf("--relay=%v", relay), "--metrics", "127.0.0.1:9090",
		"--turn", turnUDP, "--turn", turnTCP, "--turn-secret-file", file)
}

// waitVia waits until p's one peer is relayed via the relay named want.
func (l *lab) waitVia(p *peerSpec, want string, timeout time.Duration) {
	l.t.Helper()
	eventually(l.t, timeout, p.iface+" relayed via "+want, func() error {
		st, err := l.status(p)
		if err != nil {
			return err
		}
		if len(st.Peers) != 1 || st.Peers[0].Path != "relay" || st.Peers[0].Via != want {
			return fmt.Errorf("peers %+v", st.Peers)
		}
		return nil
	})
}

// TestTURNRelay: pairs that need a relay run over coturn when the
// rendezvous relays nothing itself (--relay=false): hard/hard over UDP,
// and a peer whose network blocks UDP over TCP to the TURN server.
func TestTURNRelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix, natA, natB string
		viaA, viaB         string
	}{
		{"ptu", "hard", "hard", turnUDP, turnUDP},
		{"ptuk", "blocked", "easy", turnTCP, turnUDP},
	} {
		t.Run(tc.natA+"-"+tc.natB, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, tc.prefix, tc.natA, tc.natB)
			l.startCoturn("coturn", turnSecret)
			_, rvKey := l.startTURNRendezvous(turnSecret, false)
			a, b := newPeer(t, "a1", tc.prefix+"a", "10.98.0.1"), newPeer(t, "b1", tc.prefix+"b", "10.98.0.2")
			l.up(a, b, rvKey)
			l.up(b, a, rvKey)
			l.waitVia(a, tc.viaA, 30*time.Second)
			l.waitVia(b, tc.viaB, 30*time.Second)
			l.ping(a, b)
			l.transfer(a, b)
			// punchtun ping's probes go through the allocations too.
			if r := l.pingPeer(a, b.host, "-c", "3"); r.Received != 3 || len(r.Replies) == 0 || r.Replies[0].Path != "relay" {
				t.Errorf("punchtun ping through TURN: %+v", r)
			}

			st, err := l.status(a)
			if err != nil {
				t.Fatal(err)
			}
			if n := st.RelayedBytes["turn"].Tx; n < 10<<20 {
				t.Errorf("a sent %d bytes through TURN, want the 10 MiB transfer's", n)
			}
			stb, err := l.status(b)
			if err != nil {
				t.Fatal(err)
			}
			if n := stb.RelayedBytes["turn"].Rx; n < 10<<20 {
				t.Errorf("b received %d bytes through TURN, want the 10 MiB transfer's", n)
			}
			if st.TURN == nil || st.TURN.Server != tc.viaA {
				t.Errorf("a's allocation %+v, want one on %s", st.TURN, tc.viaA)
			}
			m, err := l.scrapeIn("rv", "127.0.0.1:9090")
			if err != nil {
				t.Fatal(err)
			}
			if n := m["punchtun_rendezvous_relayed_bytes_total"]; n != 0 {
				t.Errorf("the rendezvous relayed %v bytes with --relay=false", n)
			}
		})
	}
}

// TestTURNFallback: a pair on coturn moves to the rendezvous's relay when
// coturn stops, while a ping runs; with coturn back under another secret
// (credentials it refuses), the peers say why in their log and stay on
// the rendezvous's relay.
func TestTURNFallback(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptuf", "hard", "hard")
	coturn := l.startCoturn("coturn", turnSecret)
	_, rvKey := l.startTURNRendezvous(turnSecret, true)
	a, b := newPeer(t, "a1", "ptufa", "10.98.1.1"), newPeer(t, "b1", "ptufb", "10.98.1.2")
	pa := l.up(a, b, rvKey)
	l.up(b, a, rvKey)
	// TURN is preferred to the rendezvous's relay once allocated.
	l.waitVia(a, turnUDP, 30*time.Second)
	l.waitVia(b, turnUDP, 30*time.Second)

	pinger := l.start("a1", "ping", "ping", "-i", "0.2", "-c", "100", "-W", "1", b.addr)
	time.Sleep(time.Second) // a second of pings on TURN first
	coturn.stop()
	l.waitVia(a, rendezvousAddr, 15*time.Second)
	l.waitVia(b, rendezvousAddr, 15*time.Second)
	l.ping(a, b)
	pinger.stop()

	l.startCoturn("coturn-wrong-secret", "not-"+turnSecret)
	eventually(t, 60*time.Second, "a's log says the TURN server refused its credentials", func() error {
		log, _ := os.ReadFile(pa.log)
		if !strings.Contains(string(log), "refused our credentials") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	l.waitVia(a, rendezvousAddr, time.Second)
	l.ping(a, b)
}

// TestTURNOneWayLoss: what the TURN server sends towards a's NAT is lost,
// nothing else. a hears nothing through TURN and leaves it for the
// rendezvous's relay; b still hears a (now through the rendezvous) and
// must notice that its own packets through TURN go nowhere: both end on
// the rendezvous's relay, and the ping gets through.
func TestTURNOneWayLoss(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptuo", "hard", "hard")
	l.startCoturn("coturn", turnSecret)
	_, rvKey := l.startTURNRendezvous(turnSecret, true)
	a, b := newPeer(t, "a1", "ptuoa", "10.98.2.1"), newPeer(t, "b1", "ptuob", "10.98.2.2")
	l.up(a, b, rvKey)
	l.up(b, a, rvKey)
	l.waitVia(a, turnUDP, 30*time.Second)
	l.waitVia(b, turnUDP, 30*time.Second)

	l.run("nata", "nft", "insert", "rule", "inet", "filter", "forward", "ip", "saddr", "203.0.113.20", "meta", "l4proto", "udp", "drop")
	pinger := l.start("a1", "ping", "ping", "-i", "0.2", "-W", "1", b.addr)
	l.waitVia(a, rendezvousAddr, 15*time.Second)
	l.waitVia(b, rendezvousAddr, 15*time.Second)
	pinger.stop()
	l.ping(a, b)
}
