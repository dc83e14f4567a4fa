//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// Certificates replaced and retired, in the lab: a member re-signed with
// less must not get back what it lost by presenting its old certificate,
// still valid for a year, even after both sides restarted; the owner can
// retire that old certificate outright; an address moved to a new
// member's certificate is reached at the new member.

const adminsToServersRules = `[Rule]
From = group:admins
To = group:servers
Allow = tcp/22

[Rule]
From = *
To = *
Allow = icmp
`

// refusals is how many members p refused for reason.
func (l *netLab) refusals(p *peerSpec, reason string) uint64 {
	st, err := l.status(p)
	if err != nil || st.Network == nil {
		return 0
	}
	return st.Network.Refusals[reason]
}

func TestNetworkCertificatesSuperseded(t *testing.T) {
	t.Parallel()
	l := newNetLab(t, "ptcrt", "easy", "easy")
	server := newPeer(t, "b1", "ptcrt1", "100.64.3.1")
	admin := newPeer(t, "a1", "ptcrt2", "100.64.3.2")
	witness := newPeer(t, "pub", "ptcrt3", "100.64.3.3") // never sees the admin's new certificate
	oldBox := newPeer(t, "a2", "ptcrt4", "100.64.3.4")
	newBox := newPeer(t, "a2", "ptcrt5", "100.64.3.4") // the address moves here

	rules := filepath.Join(l.dir, "rules.ini")
	os.WriteFile(rules, []byte(adminsToServersRules), 0o644)
	pol := l.signDoc("policy", l.keyFile, "policy", "--seq", "100", rules)
	serverConf := l.memberConfig(server, l.sign(server, "server", l.keyFile, "--group", "servers"), "Policy = "+pol+"\n")
	procs := map[*peerSpec]*proc{server: l.startPeer(server, serverConf, server.iface)}
	sshd := l.start(server.host, "nc-22", "nc", "-l", "-k", "-s", server.addr, "-p", "22")
	defer sshd.stop()

	// The admin, signed into admins, reaches tcp/22; the witness knows it
	// by that certificate.
	oldCert := l.sign(admin, "admin", l.keyFile, "--group", "admins")
	procs[admin] = l.startPeer(admin, l.memberConfig(admin, oldCert, ""), admin.iface)
	procs[witness] = l.startPeer(witness, l.memberConfig(witness, l.sign(witness, "witness", l.keyFile), ""), witness.iface)
	l.waitSeq(10*time.Second, 100, server)
	l.firstPing(admin, server)
	if !l.tcpOpens(admin, server, 22) {
		t.Fatal("the admin does not reach tcp/22 with its admins certificate")
	}
	l.firstPing(admin, witness)

	// The witness hears nothing of the admin until the retirement: frozen
	// (SIGSTOP) while the admin runs with its new certificate, so that it
	// cannot meet that one — as it would, probing the admin the moment the
	// admin restarts.
	procs[witness].cmd.Process.Signal(syscall.SIGSTOP)
	thaw := sync.OnceFunc(func() { procs[witness].cmd.Process.Signal(syscall.SIGCONT) })
	defer thaw()

	// Re-signed without admins, run once: no tcp/22.
	newCert := l.sign(admin, "admin", l.keyFile) // a second later: network sign waits out its second
	procs[admin].stop()
	procs[admin] = l.startPeer(admin, l.memberConfig(admin, newCert, ""), admin.iface+"-new")
	l.firstPing(admin, server)
	if l.tcpOpens(admin, server, 22) {
		t.Fatal("re-signed without admins, the admin still reaches tcp/22")
	}

	// Both restart, the admin with its old certificate: still no tcp/22.
	procs[admin].stop()
	procs[server].stop()
	procs[server] = l.startPeer(server, serverConf, server.iface+"-restarted")
	procs[admin] = l.startPeer(admin, l.memberConfig(admin, oldCert, ""), admin.iface+"-old-again")
	if l.tcpOpens(admin, server, 22) {
		t.Error("after both restarted, the old certificate gave tcp/22 back")
	}
	// Refused as superseded by the rendezvous (which kept the newer in its
	// state) or, should a rendezvous introduce it all the same, by the
	// server (which kept it in IFACE.certs).
	eventually(t, 5*time.Second, "the old certificate refused as superseded", func() error {
		l.reaches(admin, server) // an introduction, if the rendezvous still makes one
		st, err := l.status(admin)
		if l.refusals(server, "superseded") == 0 && (err != nil || st.Network.Refused != "superseded") {
			return fmt.Errorf("no refusal as superseded at the server or the rendezvous (%v); admin reaches the server: %v", err, l.reaches(admin, server))
		}
		return nil
	})
	t.Logf("after both restarted: the old certificate got no tcp/22; the server refused it as superseded %d times", l.refusals(server, "superseded"))
	thaw()

	// The owner retires the old certificate: the witness, which only
	// ever saw it, lets the admin go at once and refuses it after.
	b, _ := os.ReadFile(oldCert)
	old, err := cert.ParseText(string(b))
	if err != nil {
		t.Fatal(err)
	}
	st, err := l.status(witness)
	if err != nil {
		t.Fatal(err)
	}
	if ps := memberStatus(st.Peers, "admin"); ps == nil || ps.ValidUntil != old.NotAfter.UTC().Format(time.RFC3339) {
		t.Fatalf("before the retirement, the witness does not hold the admin by its old certificate: %+v", ps)
	}
	retire := l.signDoc("retire", l.keyFile, "revoke", "--cert", oldCert)
	quiet(t, func() {
		start := time.Now()
		if code, out := l.publish(server, retire); code != 0 {
			t.Fatalf("publish the retirement: %s", out)
		}
		eventually(t, 5*time.Second, "the witness lets the retired certificate go", func() error {
			st, err := l.status(witness)
			if err != nil || memberStatus(st.Peers, "admin") != nil {
				return fmt.Errorf("admin still a member of the witness (%v)", err)
			}
			return nil
		})
		t.Logf("retired: the witness let the old certificate go %v after publish", time.Since(start).Round(time.Millisecond))
	})
	if l.reaches(admin, witness) || l.reaches(witness, admin) {
		t.Error("the witness and the retired certificate still reach each other")
	}

	// An address moves: the server knows 100.64.3.4 as the old box; that
	// box leaves, the new box gets the address by a newer certificate and
	// reaches the server, which then reaches it at that address.
	procs[oldBox] = l.startPeer(oldBox, l.memberConfig(oldBox, l.sign(oldBox, "old-box", l.keyFile), ""), oldBox.iface)
	l.firstPing(server, oldBox)
	procs[oldBox].stop()
	moved := l.sign(newBox, "new-box", l.keyFile)
	procs[newBox] = l.startPeer(newBox, l.memberConfig(newBox, moved, ""), newBox.iface)
	l.firstPing(newBox, server)
	l.ping(server, newBox)
	st, err = l.status(server)
	if err != nil {
		t.Fatal(err)
	}
	if memberStatus(st.Peers, "old-box") != nil || memberStatus(st.Peers, "new-box") == nil {
		t.Errorf("the server's members after the move: old-box %v, new-box %v", memberStatus(st.Peers, "old-box") != nil, memberStatus(st.Peers, "new-box") != nil)
	}
}
