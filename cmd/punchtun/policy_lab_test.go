//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A network's policy and revocations in the lab, through the binary's own
// commands: network policy, revoke, publish, Policy = and status.

const laptopsToServersRules = `[Rule]
From = group:laptops
To = group:servers
Allow = tcp/22, icmp
`

// signDoc signs a rules file (policy) or keys (revoke) with keyFile and
// returns the file the document's text is in.
func (l *netLab) signDoc(name, keyFile, sub string, args ...string) string {
	l.t.Helper()
	out, errOut, code := punchtun(l.t, "", append([]string{"network", sub, "--key", keyFile}, args...)...)
	if code != 0 {
		l.t.Fatalf("punchtun %v: %s", args, errOut)
	}
	path := filepath.Join(l.dir, name)
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return path
}

// publish runs `punchtun network publish` on p and returns its exit code
// and output.
func (l *netLab) publish(p *peerSpec, doc string) (int, string) {
	l.t.Helper()
	out, err := l.cmd(p.host, l.bin, "network", "publish", "--run-dir", filepath.Join(l.dir, "run-"+p.iface), p.iface, doc).CombinedOutput()
	if err != nil {
		return 1, string(out)
	}
	return 0, string(out)
}

// policySeq is the seq of the policy p enforces (0: none).
func (l *netLab) policySeq(p *peerSpec) (uint64, error) {
	st, err := l.status(p)
	if err != nil || st.Network == nil {
		return 0, fmt.Errorf("status %v", err)
	}
	if st.Network.Policy == nil {
		return 0, nil
	}
	return st.Network.Policy.Seq, nil
}

// waitSeq waits until every member enforces the policy of seq.
func (l *netLab) waitSeq(within time.Duration, seq uint64, members ...*peerSpec) {
	l.t.Helper()
	start := time.Now()
	for _, p := range members {
		eventually(l.t, within-time.Since(start), fmt.Sprintf("%s enforces policy %d", p.iface, seq), func() error {
			got, err := l.policySeq(p)
			if err != nil || got != seq {
				return fmt.Errorf("policy %d (%v)", got, err)
			}
			return nil
		})
	}
	l.t.Logf("policy %d enforced by all %d members after %v", seq, len(members), time.Since(start).Round(time.Millisecond))
}

// reaches reports whether from's ping of to is answered within 1 s.
func (l *netLab) reaches(from, to *peerSpec) bool {
	return l.cmd(from.host, "ping", "-c", "1", "-W", "1", to.addr).Run() == nil
}

// tcpOpens reports whether from opens a TCP connection to to's port.
func (l *netLab) tcpOpens(from, to *peerSpec, port int) bool {
	return l.cmd(from.host, "nc", "-z", "-w", "2", to.addr, fmt.Sprint(port)).Run() == nil
}

func TestNetworkPolicy(t *testing.T) {
	t.Parallel()
	l := newNetLab(t, "ptpol", "easy", "easy")
	laptop := newPeer(t, "a1", "ptpol1", "100.64.1.1")
	s1 := newPeer(t, "b1", "ptpol2", "100.64.1.2")
	s2 := newPeer(t, "pub", "ptpol3", "100.64.1.3")
	spare := newPeer(t, "a2", "ptpol4", "100.64.1.4") // a second laptop, revoked later
	all := []*peerSpec{laptop, s1, s2, spare}

	restrictive := filepath.Join(l.dir, "rules.ini")
	os.WriteFile(restrictive, []byte(laptopsToServersRules), 0o644)
	open := filepath.Join(l.dir, "open.ini")
	os.WriteFile(open, []byte("[Rule]\nFrom = *\nTo = *\nAllow = any\n"), 0o644)
	p100 := l.signDoc("p100", l.keyFile, "policy", "--seq", "100", restrictive)

	// From the members' start to their first pings: a measurement.
	endQuiet := quietFrom(t)
	defer endQuiet()
	// s1 loads the policy at up (Policy =); the others hear of it.
	conf, procs := map[*peerSpec]string{}, map[*peerSpec]*proc{}
	for _, m := range []struct {
		p           *peerSpec
		name, group string
		extra       string
	}{
		{laptop, "laptop", "laptops", ""}, {s1, "s1", "servers", "Policy = " + p100 + "\n"},
		{s2, "s2", "servers", ""}, {spare, "spare", "laptops", ""},
	} {
		conf[m.p] = l.memberConfig(m.p, l.sign(m.p, m.name, l.keyFile, "--group", m.group), m.extra)
		procs[m.p] = l.startPeer(m.p, conf[m.p], m.p.iface)
	}
	l.waitSeq(10*time.Second, 100, all...)

	// laptop → server: ping and ssh; server → laptop: neither; server →
	// server: nothing.
	// A member that enforces the policy has registered (the documents
	// follow the ack): the first ping to each is answered at once.
	for _, s := range []*peerSpec{s1, s2} {
		took := l.firstPing(laptop, s)
		t.Logf("first ping laptop → %s: answered after %v", s.iface, took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("first ping laptop → %s answered after %v, want within 1 s", s.iface, took)
		}
	}
	endQuiet()
	l.ssh(laptop, s1)
	listener := l.start(laptop.host, "nc-laptop", "nc", "-l", "-k", "-s", laptop.addr, "-p", "2222")
	defer listener.stop()
	if l.reaches(s1, laptop) {
		t.Error("a server's ping of the laptop is answered")
	}
	if l.tcpOpens(s1, laptop, 2222) {
		t.Error("a server opened a TCP connection to the laptop")
	}
	if l.reaches(s1, s2) {
		t.Error("a server's ping of another server is answered")
	}
	st, _ := l.status(laptop)
	if st.Network.Policy == nil || st.Network.Policy.Dropped["no-rule"] == 0 {
		t.Errorf("the laptop counted no drops: %+v", st.Network.Policy)
	}

	// A newer policy, allowing all, published on s2: everywhere within 5 s.
	p200 := l.signDoc("p200", l.keyFile, "policy", "--seq", "200", open)
	quiet(t, func() {
		if code, out := l.publish(s2, p200); code != 0 {
			t.Fatalf("publish: %s", out)
		}
		l.waitSeq(5*time.Second, 200, all...)
	})
	if !l.reaches(s1, laptop) || !l.tcpOpens(s1, laptop, 2222) {
		t.Error("under the open policy, a server does not reach the laptop")
	}
	// The older one again changes nothing; another network's is refused.
	if code, out := l.publish(laptop, p100); code == 0 || !strings.Contains(out, "older") {
		t.Errorf("publishing the older policy: exit %d, %s", code, out)
	}
	otherKey := filepath.Join(l.dir, "other.key")
	other, _, _ := punchtun(t, "", "network", "new")
	os.WriteFile(otherKey, []byte(other), 0o600)
	forged := l.signDoc("forged", otherKey, "policy", "--seq", "999", restrictive)
	forgedRev := l.signDoc("forged-rev", otherKey, "revoke", spare.priv.Public().String())
	for _, doc := range []string{forged, forgedRev} {
		if code, out := l.publish(laptop, doc); code == 0 || !strings.Contains(out, "other-network") {
			t.Errorf("publishing a document of another network: exit %d, %s", code, out)
		}
	}
	time.Sleep(time.Second) // what would have spread, had it been taken
	for _, p := range all {
		if seq, _ := l.policySeq(p); seq != 200 {
			t.Errorf("%s enforces policy %d after the older and forged ones, want 200", p.iface, seq)
		}
	}
	if st, _ := l.status(laptop); st.Network.DocumentsRefused < 2 {
		t.Errorf("the laptop counted %d documents refused, want 2", st.Network.DocumentsRefused)
	}

	// A rendezvous that withholds: it never gets what members publish
	// (the router in front of it drops Publish, wire type 11). s1 talks to
	// the spare laptop and to the laptop; the laptop revokes the spare:
	// s1 hears it from the laptop in-tunnel and lets the spare go.
	if !l.reaches(s1, spare) || !l.reaches(s1, laptop) {
		t.Fatal("s1 does not reach the spare laptop or the laptop under the open policy")
	}
	l.run("rv", "nft", "add table inet ptwithhold")
	l.run("rv", "nft", "add chain inet ptwithhold in { type filter hook input priority -10 ; }")
	l.run("rv", "nft", "add rule inet ptwithhold in udp dport 3478 @th,96,8 11 counter drop")
	revSpare := l.signDoc("rev-spare", l.keyFile, "revoke", spare.priv.Public().String())
	quiet(t, func() {
		start := time.Now()
		if code, out := l.publish(laptop, revSpare); code != 0 {
			t.Fatalf("publish the revocation: %s", out)
		}
		eventually(t, 5*time.Second, "s1 lets the revoked spare go, told by the laptop alone", func() error {
			st, err := l.status(s1)
			if err != nil || st.Network.RevokedKeys != 1 || memberStatus(st.Peers, "spare") != nil {
				return fmt.Errorf("revoked keys %d, spare still a member: %v", st.Network.RevokedKeys, memberStatus(st.Peers, "spare") != nil)
			}
			return nil
		})
		t.Logf("withheld by the rendezvous: s1 dropped the revoked member %v after publish", time.Since(start).Round(time.Millisecond))
	})
	if l.reaches(s1, spare) || l.reaches(spare, s1) {
		t.Error("s1 and the revoked spare still reach each other")
	}
	if out := l.run("rv", "nft", "list chain inet ptwithhold in"); !strings.Contains(out, "packets") || strings.Contains(out, "packets 0 ") {
		t.Errorf("the withholding rule dropped nothing:\n%s", out)
	}
	l.run("rv", "nft", "delete table inet ptwithhold")

	// A revocation through the rendezvous: s2 is cut off from all within
	// 5 s, and after its restart reaches no one.
	if !l.reaches(laptop, s2) || !l.reaches(s1, s2) {
		t.Fatal("s2 unreachable before its revocation")
	}
	revS2 := l.signDoc("rev-s2", l.keyFile, "revoke", s2.priv.Public().String())
	quiet(t, func() {
		start := time.Now()
		if code, out := l.publish(s1, revS2); code != 0 {
			t.Fatalf("publish the revocation: %s", out)
		}
		for _, p := range []*peerSpec{laptop, s1} {
			eventually(t, 5*time.Second-time.Since(start), p.iface+" lets the revoked s2 go", func() error {
				st, err := l.status(p)
				if err != nil || memberStatus(st.Peers, "s2") != nil || st.Network.RevokedKeys < 1 {
					return fmt.Errorf("s2 still a member of %s (%v)", p.iface, err)
				}
				return nil
			})
		}
		eventually(t, 5*time.Second-time.Since(start), "the rendezvous refuses s2", func() error {
			st, err := l.status(s2)
			if err != nil || st.Network.Refused != "revoked" {
				return fmt.Errorf("s2's network status %+v (%v)", st.Network, err)
			}
			return nil
		})
		t.Logf("revoked through the rendezvous: everyone let s2 go %v after publish", time.Since(start).Round(time.Millisecond))
	})
	for _, p := range []*peerSpec{laptop, s1} {
		if l.reaches(p, s2) || l.reaches(s2, p) {
			t.Errorf("%s and the revoked s2 still reach each other", p.host)
		}
	}
	// Restarted, the revoked machine is refused again and reaches no one.
	procs[s2].stop()
	procs[s2] = l.startPeer(s2, conf[s2], s2.iface+"-revoked-restarted")
	eventually(t, 5*time.Second, "the restarted revoked s2 refused", func() error {
		st, err := l.status(s2)
		if err != nil || st.Network.Refused != "revoked" {
			return fmt.Errorf("s2's network status %+v (%v)", st.Network, err)
		}
		return nil
	})
	for _, p := range []*peerSpec{laptop, s1} {
		if l.reaches(s2, p) || l.reaches(p, s2) {
			t.Errorf("%s and the restarted revoked s2 reach each other", p.host)
		}
	}

	// A restrictive policy again, then the rendezvous goes down and s1
	// restarts: it enforces what it kept.
	p300 := l.signDoc("p300", l.keyFile, "policy", "--seq", "300", restrictive)
	if code, out := l.publish(laptop, p300); code != 0 {
		t.Fatalf("publish: %s", out)
	}
	l.waitSeq(5*time.Second, 300, laptop, s1)
	l.rv.stop()
	procs[s1].stop()
	l.startPeer(s1, conf[s1], s1.iface+"-restarted")
	if seq, err := l.policySeq(s1); seq != 300 {
		t.Errorf("restarted with the rendezvous down, s1 enforces policy %d (%v), want 300", seq, err)
	}
	if st, _ := l.status(s1); st.Network.RevokedKeys != 2 {
		t.Errorf("restarted, s1 holds %d revoked keys, want 2", st.Network.RevokedKeys)
	}
}
