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

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel"
)

// A network in the lab: members with no [Peer] sections find each other
// on demand, through the punchtun binary's own commands (network new,
// sign, up, syncconf, status).

// netLab is a lab with a network key and the rendezvous.
type netLab struct {
	*lab
	keyFile, netPub string
	rvKey           key.Private
	rv              *proc
	certs           []string // signed so far
}

func newNetLab(t *testing.T, prefix, natA, natB string) *netLab {
	l := &netLab{lab: newLab(t, prefix, natA, natB)}
	l.rv, l.rvKey = l.launchRendezvous()
	priv, _, code := punchtun(t, "", "network", "new")
	if code != 0 {
		t.Fatal("network new failed")
	}
	l.keyFile = filepath.Join(l.dir, "network.key")
	os.WriteFile(l.keyFile, []byte(priv), 0o600)
	pub, _, _ := punchtun(t, priv, "network", "pub")
	l.netPub = strings.TrimSpace(pub)
	return l
}

// sign signs p's certificate with keyFile, as `punchtun network sign` does,
// into <iface>.cert, and returns its path.
func (l *netLab) sign(p *peerSpec, name, keyFile string, extra ...string) string {
	l.t.Helper()
	args := append([]string{"network", "sign", "--key", keyFile, "--name", name, "--address", p.addr + "/24"}, extra...)
	out, errOut, code := punchtun(l.t, "", append(args, p.priv.Public().String())...)
	if code != 0 {
		l.t.Fatalf("network sign: %s", errOut)
	}
	path := filepath.Join(l.dir, fmt.Sprintf("%s-%d.cert", p.iface, len(l.certs)))
	l.certs = append(l.certs, path)
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return path
}

// memberConfig writes a member's config: no Address, no [Peer]; extra is
// appended (static peers).
func (l *netLab) memberConfig(p *peerSpec, certFile, extra string) string {
	l.t.Helper()
	conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nRendezvous = %s\nRendezvousKey = %s\nNetwork = %s\nCertificateFile = %s\n%s",
		p.priv.Encode(), rendezvousAddr, l.rvKey.Public(), l.netPub, certFile, extra)
	path := filepath.Join(l.dir, p.iface+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		l.t.Fatal(err)
	}
	return path
}

// firstPing pings to's address from a member that has never contacted
// it, a ping at a time, each waiting up to 1 s for its answer, and returns
// how long until the first answer came. A test bounding that time calls
// it in a quiet section begun before the members started: waiting for
// quiet between their start and their first contact would change what is
// tested.
func (l *netLab) firstPing(from, to *peerSpec) time.Duration {
	l.t.Helper()
	start := time.Now()
	for try := 1; ; try++ {
		out, err := l.cmd(from.host, "ping", "-c", "1", "-W", "1", to.addr).CombinedOutput()
		if err == nil {
			return time.Since(start)
		}
		if try == 5 {
			l.t.Fatalf("%s → %s: no answer to 5 pings: %v\n%s", from.host, to.host, err, out)
		}
	}
}

func TestNetworkMembersOnDemand(t *testing.T) {
	t.Parallel()
	l := newNetLab(t, "ptnet", "easy", "hard")
	m1 := newPeer(t, "a1", "ptnet1", "100.64.0.1")
	m2 := newPeer(t, "b1", "ptnet2", "100.64.0.2")
	m3 := newPeer(t, "a2", "ptnet3", "100.64.0.3")
	static := newPeer(t, "pub", "ptnets", "10.99.0.3")

	// From the members' start to m2.net resolved: a measurement.
	endQuiet := quietFrom(t)
	defer endQuiet()
	// m1 also has a static peer beside the network, as today's configs do.
	staticPeer := fmt.Sprintf("\n[Peer]\nName = static\nPublicKey = %s\nAllowedIPs = 10.99.0.3/32\n", static.priv.Public())
	l.startPeer(m1, l.memberConfig(m1, l.sign(m1, "m1", l.keyFile), staticPeer), m1.iface)
	l.startPeer(m2, l.memberConfig(m2, l.sign(m2, "m2", l.keyFile), ""), m2.iface)
	staticConf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 10.99.0.3/24\nRendezvous = %s\nRendezvousKey = %s\n\n[Peer]\nName = m1\nPublicKey = %s\nAllowedIPs = 100.64.0.1/32\n",
		static.priv.Encode(), rendezvousAddr, l.rvKey.Public(), m1.priv.Public())
	staticPath := filepath.Join(l.dir, static.iface+".conf")
	os.WriteFile(staticPath, []byte(staticConf), 0o600)
	l.startPeer(static, staticPath, static.iface)

	// Registered, each with its certificate.
	for _, p := range []*peerSpec{m1, m2} {
		eventually(t, 10*time.Second, p.iface+" registered as a member", func() error {
			st, err := l.status(p)
			if err != nil {
				return err
			}
			if st.Network == nil || len(st.Rendezvous) == 0 || !st.Rendezvous[0].Registered {
				return fmt.Errorf("network %+v, rendezvous %+v", st.Network, st.Rendezvous)
			}
			return nil
		})
	}

	// The first ping to a member never contacted: easy → hard.
	took := l.firstPing(m1, m2)
	t.Logf("first ping m1 (easy) → m2 (hard): answered after %v", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("first ping easy → hard answered after %v, want within 2 s", took)
	}
	l.ping(m2, m1)
	st, _ := l.status(m1)
	if ps := memberStatus(st.Peers, "m2"); ps == nil || ps.ValidUntil == "" || len(ps.Addresses) != 1 {
		t.Errorf("m1's status does not list m2 as a member: %+v", st.Peers)
	}
	l.transfer(m1, m2)

	// The static peer beside the network works as before.
	l.run(m1.host, "ping", "-c", "3", "-i", "0.2", "-W", "2", static.addr)

	// Refused: a certificate another network's key signed, then one that
	// has expired. Nobody reaches them; the rendezvous says why.
	otherKey := filepath.Join(l.dir, "other.key")
	other, _, _ := punchtun(t, "", "network", "new")
	os.WriteFile(otherKey, []byte(other), 0o600)
	for _, tc := range []struct {
		name, reason, certFile string
	}{
		{"another network's", "other-network", l.sign(m3, "m3", otherKey)},
		{"expired", "expired", l.sign(m3, "m3", l.keyFile, "--valid", "1s")},
	} {
		if tc.reason == "expired" {
			eventually(t, 5*time.Second, "the 1-s certificate expires", func() error {
				if _, _, code := punchtun(t, "", "network", "show", "--network", l.netPub, tc.certFile); code != 1 {
					return fmt.Errorf("still valid")
				}
				return nil
			})
		}
		pr := l.startPeer(m3, l.memberConfig(m3, tc.certFile, ""), m3.iface+"-"+tc.reason)
		eventually(t, 10*time.Second, tc.name+": refused", func() error {
			st, err := l.status(m3)
			if err != nil {
				return err
			}
			if st.Network == nil || st.Network.Refused != tc.reason {
				return fmt.Errorf("network %+v", st.Network)
			}
			return nil
		})
		if out, err := l.cmd(m1.host, "ping", "-c", "1", "-W", "2", m3.addr).CombinedOutput(); err == nil {
			t.Errorf("%s member answered a ping:\n%s", tc.name, out)
		}
		pr.stop()
	}

	// A late member, with only its certificate, is reached at once. It
	// answers DNS for the network's names (Domain).
	l.startPeer(m3, l.memberConfig(m3, l.sign(m3, "m3", l.keyFile), "Domain = net\n"), m3.iface)
	eventually(t, 10*time.Second, "m3 registered", func() error {
		st, err := l.status(m3)
		if err != nil || st.Network == nil || st.Network.Refused != "" || !st.Rendezvous[0].Registered {
			return fmt.Errorf("status %+v %v", st, err)
		}
		return nil
	})
	took = l.firstPing(m1, m3)
	t.Logf("first ping m1 → m3 (easy, behind the same NAT): answered after %v", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("first ping easy → easy answered after %v, want within 1 s", took)
	}

	// A member's name resolves before any packet went to it, and a ping
	// by that name is answered: m3 asks for m2.net (ping -n: no reverse
	// lookup, which this lab has no resolver for).
	resolvConf := filepath.Join(l.dir, "resolv-m3.conf")
	os.WriteFile(resolvConf, []byte("nameserver "+m3.addr+"\n"), 0o644)
	start := time.Now()
	out, err := l.cmd(m3.host, "unshare", "-m", "--propagation", "private", "sh", "-c",
		"mount --bind "+resolvConf+" /etc/resolv.conf && getent ahostsv4 m2.net && ping -n -c 1 -W 2 m2.net").CombinedOutput()
	took = time.Since(start)
	endQuiet()
	if err != nil || !strings.HasPrefix(string(out), m2.addr+" ") {
		t.Fatalf("m2.net from m3, which never reached m2: %v\n%s", err, out)
	}
	t.Logf("m3 (easy) → m2.net (hard): resolved and pinged after %v", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("m2.net resolved and pinged after %v, want within 2 s", took)
	}

	// Renewal: a new certificate applied with syncconf drops no packet of
	// a 5-per-second ping.
	quiet(t, func() {
		pinger := l.start(m2.host, "ping-renewal", "ping", "-i", "0.2", "-c", "25", "-W", "1", m1.addr)
		eventually(t, 5*time.Second, "pings before the renewal", func() error {
			if out, _ := os.ReadFile(pinger.log); !strings.Contains(string(out), "icmp_seq=3 ") {
				return fmt.Errorf("ping log: %q", out)
			}
			return nil
		})
		l.memberConfig(m1, l.sign(m1, "m1", l.keyFile, "--valid", "2y"), staticPeer)
		l.run(m1.host, l.bin, "syncconf", m1.iface, "--run-dir", filepath.Join(l.dir, "run-"+m1.iface))
		<-pinger.done
		out, _ = os.ReadFile(pinger.log)
	})
	if !strings.Contains(string(out), " 0% packet loss") {
		t.Errorf("ping across the renewal lost packets:\n%s", out)
	}
	st, _ = l.status(m1)
	if until, err := time.Parse(time.RFC3339, st.Network.ValidUntil); err != nil || time.Until(until) < 365*24*time.Hour {
		t.Errorf("after syncconf, m1's certificate is valid until %q", st.Network.ValidUntil)
	}
	if _, err := exec.LookPath("wg"); err == nil {
		// wg show sees the members as peers.
		if out := l.run(m1.host, "wg", "show", m1.iface, "peers"); !strings.Contains(out, m2.priv.Public().String()) {
			t.Errorf("wg show %s peers lacks m2:\n%s", m1.iface, out)
		}
	}
}

func memberStatus(peers []tunnel.PeerStatus, name string) *tunnel.PeerStatus {
	for i := range peers {
		if peers[i].Member && peers[i].Name == name {
			return &peers[i]
		}
	}
	return nil
}

// TestNetworkMembersMixedNATs: members behind a network that blocks UDP, a
// full cone and no NAT at all reach each other on demand, each pair both
// ways, by address.
func TestNetworkMembersMixedNATs(t *testing.T) {
	t.Parallel()
	l := newNetLab(t, "ptnetx", "blocked", "cone")
	blocked := newPeer(t, "a1", "ptnetx1", "100.64.0.11")
	cone := newPeer(t, "b1", "ptnetx2", "100.64.0.12")
	cone.port = 51820 // the port the cone NAT forwards
	public := newPeer(t, "pub", "ptnetx3", "100.64.0.13")
	// From the members' start to their first pings: a measurement.
	defer quietFrom(t)()
	for i, p := range []*peerSpec{blocked, cone, public} {
		listen := ""
		if p.port != 0 {
			listen = fmt.Sprintf("ListenPort = %d\n", p.port)
		}
		l.startPeer(p, l.memberConfig(p, l.sign(p, fmt.Sprintf("m%d", i+4), l.keyFile), listen), p.iface)
	}
	for _, p := range []*peerSpec{blocked, cone, public} {
		// Behind the blocked network, registering over TCP takes the
		// seconds UDP is given first (issue: back within a second).
		eventually(t, 20*time.Second, p.iface+" registered", func() error {
			st, err := l.status(p)
			if err != nil || len(st.Rendezvous) == 0 || !st.Rendezvous[0].Registered {
				return fmt.Errorf("status %+v %v", st, err)
			}
			return nil
		})
	}
	for _, pair := range [][2]*peerSpec{{cone, public}, {blocked, cone}, {public, blocked}} {
		took := l.firstPing(pair[0], pair[1])
		t.Logf("first ping %s → %s: answered after %v", pair[0].host, pair[1].host, took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("first ping %s → %s answered after %v, want within 2 s", pair[0].host, pair[1].host, took)
		}
		l.ping(pair[1], pair[0])
	}
	st, _ := l.status(blocked)
	if ps := memberStatus(st.Peers, "m5"); ps == nil || ps.Path != "relay-tcp" {
		t.Errorf("the member behind the UDP block reaches m5 by %+v, want relay-tcp", ps)
	}
}
