//go:build linux

package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// pingPeer runs `punchtun ping --json` on from's host and returns what it
// printed.
func (l *lab) pingPeer(from *peerSpec, peer string, args ...string) pingResult {
	l.t.Helper()
	out := l.run(from.host, append([]string{l.bin, "ping", "--json", "--interval", "200ms", "--run-dir", filepath.Join(l.dir, "run-"+from.iface)}, append(args, peer)...)...)
	var r pingResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		l.t.Fatalf("ping --json: %v: %s", err, out)
	}
	return r
}

// TestPing probes the peer with `punchtun ping` by its name, public key and
// virtual IP: over a direct path (both NATs easy) and through the relay
// (both hard), each pong names the path it came by, its endpoint, and a
// positive RTT.
func TestPing(t *testing.T) {
	t.Parallel()
	for _, lc := range []struct{ prefix, nat, path string }{
		{"ptrp", "easy", "direct"},
		{"ptrq", "hard", "relay"},
	} {
		t.Run(lc.path, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, lc.prefix, lc.nat, lc.nat)
			rv := l.newRendezvous("rendezvous", rendezvousAddr, []string{rendezvousAddr, rendezvousAddr2}, "")
			a, b, _, _ := l.pair(lc.prefix+"a0", "a1", lc.prefix+"b0", "b1", lc.path, rv)
			for _, peer := range []string{b.host, b.priv.Public().String(), b.addr} {
				r := l.pingPeer(a, peer, "-c", "3")
				if r.Sent != 3 || r.Received != 3 || r.Peer != b.host || r.PublicKey != b.priv.Public().String() || r.Interface != a.iface {
					t.Errorf("ping %s: %+v", peer, r)
				}
				for _, rep := range r.Replies {
					okEndpoint := strings.HasPrefix(rep.Endpoint, "203.0.113.22:")
					if lc.path == "relay" {
						okEndpoint = rep.Endpoint == rendezvousAddr
					}
					if rep.Path != lc.path || !okEndpoint || rep.RTTMillis <= 0 || rep.Error != "" {
						t.Errorf("ping %s: reply %+v, want path %s", peer, rep, lc.path)
					}
				}
			}
			// The other way, in text, as a person reads it.
			out := l.run(b.host, l.bin, "ping", "-c", "1", "--run-dir", filepath.Join(l.dir, "run-"+b.iface), a.addr)
			if !strings.Contains(out, "pong from a1 via "+lc.path+" ") || !strings.Contains(out, "1 probes, 1 pongs") {
				t.Errorf("ping output:\n%s", out)
			}
			t.Logf("%s", out)
			// Until a direct pong: one probe on a direct path.
			if lc.path == "direct" {
				if r := l.pingPeer(a, b.host, "-c", "0"); r.Sent != 1 || r.Received != 1 {
					t.Errorf("-c 0 on a direct path: %+v", r)
				}
			}
			// An unknown peer is an error that says so.
			if out, err := l.cmd(a.host, l.bin, "ping", "--run-dir", filepath.Join(l.dir, "run-"+a.iface), "nobody").CombinedOutput(); err == nil || !strings.Contains(string(out), "no such peer") {
				t.Errorf("ping nobody: %v %s", err, out)
			}
		})
	}
}
