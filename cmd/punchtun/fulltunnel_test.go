//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSubnetAndFullTunnel: peer B carries a LAN behind it (site to site)
// and then everything of A's (an exit node). B turns on forwarding and
// masquerading with PostUp, as wg-quick users do. With AllowedIPs =
// 0.0.0.0/0 a public host sees A's connections come from B's NAT, while
// A's own tunnel keeps its direct path (its packets are marked and
// routed the real way); after down, A's rules and routes are what they
// were before up.
func TestSubnetAndFullTunnel(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptft", "easy", "easy")
	rvKey := l.startRendezvous()
	a := newPeer(t, "a1", "ptfta", "100.64.0.1")
	b := newPeer(t, "b1", "ptftb", "100.64.0.2")

	// A LAN behind b1: 10.77.0.0/24, with a host at 10.77.0.2 (the veth
	// goes with the namespace).
	lan := "ptft-b2"
	netns(t, lan)
	for _, args := range [][]string{
		{"ip", "-n", l.prefix + "-b1", "link", "add", "ptftv0", "type", "veth", "peer", "name", "ptftv1", "netns", lan},
		{"ip", "-n", l.prefix + "-b1", "addr", "add", "10.77.0.1/24", "dev", "ptftv0"},
		{"ip", "-n", l.prefix + "-b1", "link", "set", "ptftv0", "up"},
		{"ip", "-n", lan, "addr", "add", "10.77.0.2/24", "dev", "ptftv1"},
		{"ip", "-n", lan, "link", "set", "ptftv1", "up"},
		{"ip", "-n", lan, "route", "add", "default", "via", "10.77.0.1"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}

	bExtra := "PostUp = sysctl -q -w net.ipv4.ip_forward=1\n" +
		"PostUp = nft add table ip %i-nat && nft add chain ip %i-nat post '{ type nat hook postrouting priority 100 ; }' && nft add rule ip %i-nat post oifname eth0 masquerade\n" +
		"PostDown = nft delete table ip %i-nat\n"
	write := func(p *peerSpec, conf string) string {
		path := filepath.Join(l.dir, p.iface+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	aConf := func(allowed string) string {
		return strings.Replace(peersConfig(a, rvKey, "", b), "AllowedIPs = "+b.addr+"/32", "AllowedIPs = "+b.addr+"/32, "+allowed, 1)
	}
	l.waitHooks(l.startPeer(b, write(b, peersConfig(b, rvKey, bExtra, a)), "ptftb"))
	before := l.routing("a1")

	// Site to site.
	aProc := l.startPeer(a, write(a, aConf("10.77.0.0/24")), "ptfta-site")
	l.waitPath(a, "direct")
	l.run("a1", "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.2")
	// Adding a default route needs a restart: refused, nothing changed.
	write(a, aConf("0.0.0.0/0"))
	if out, err := l.syncconf(a, ""); err == nil || !strings.Contains(string(out), "AllowedIPs: a default route") {
		t.Errorf("syncconf adding 0.0.0.0/0: %v: %s", err, out)
	}
	if err := aProc.stop(); err != nil {
		t.Fatalf("down: %v", err)
	}
	if after := l.routing("a1"); after != before {
		t.Fatalf("routing after down differs from before up:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Full tunnel through B.
	aProc = l.startPeer(a, write(a, aConf("0.0.0.0/0")), "ptfta-full")
	l.waitPath(a, "direct")
	listener := l.start("pub", "nc-exit", "nc", "-l", "-v", "-n", "-p", "9100")
	eventually(t, 10*time.Second, "nc listening on pub", func() error {
		out, _ := l.cmd("pub", "ss", "-Hltn", "sport = :9100").Output()
		if !strings.Contains(string(out), "9100") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	l.run("a1", "sh", "-c", "echo through-b | nc -N -w 5 "+pubAddr+" 9100")
	select {
	case <-listener.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection to the public host did not finish")
	}
	got, _ := os.ReadFile(listener.log)
	if !strings.Contains(string(got), "through-b") || !strings.Contains(string(got), "Connection received on "+natBAddr+" ") {
		t.Fatalf("the public host saw %q, want a connection from B's NAT (%s)", got, natBAddr)
	}
	l.run("a1", "ping", "-c", "3", "-i", "0.2", "-W", "2", pubAddr)
	l.run("a1", "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.2")
	l.transfer(a, b)
	l.ssh(a, b)
	if ps := l.waitPath(a, "direct"); !strings.HasPrefix(ps.Endpoint, natBAddr+":") {
		t.Errorf("A's path to B: %s %s, want direct to B's NAT", ps.Path, ps.Endpoint)
	}
	if err := aProc.stop(); err != nil {
		t.Fatalf("down: %v", err)
	}
	if after := l.routing("a1"); after != before {
		t.Fatalf("routing after down differs from before up:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// The lab's public addresses (scripts/lab.sh).
const (
	pubAddr  = "203.0.113.20"
	natBAddr = "203.0.113.22"
)

// routing is host's routing rules, every table's routes and the sysctl
// the full tunnel sets, as text to compare.
func (l *lab) routing(host string) string {
	l.t.Helper()
	return l.run(host, "sh", "-c", "ip -4 rule; ip -6 rule; ip -4 route show table all; ip -6 route show table all; sysctl net.ipv4.conf.all.src_valid_mark")
}
