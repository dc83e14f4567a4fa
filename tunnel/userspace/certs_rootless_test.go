//go:build unix

// The witness is frozen with SIGSTOP, which Windows has not.

package userspace_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// Certificates replaced and retired, on loopback: a member re-signed
// with less must not get back what it lost by presenting its old
// certificate, still valid for a year, even after both sides restarted;
// the owner can retire that old certificate outright; an address moved
// to a new member's certificate is reached at the new member.
//
// A member "reaches" another when a TCP connection through its SOCKS5
// proxy opens to the other's forward on tcp/7 and echoes: the policy
// lets everyone reach tcp/7, and admins the servers' tcp/22 as well.

const adminsToServers = "[Rule]\nFrom = group:admins\nTo = group:servers\nAllow = tcp/22\n\n" +
	"[Rule]\nFrom = *\nTo = *\nAllow = tcp/7\n"

// member is a key of the test's network and the address its
// certificates give it.
type member struct {
	h                    *harness
	netKey, netPub       string
	priv, pub, addr, fwd string
	signed               int // certificates signed so far
}

// sign starts signing a certificate of m named name, with more flags of
// `network sign` (--group), into a file of its own; wait returns its path.
func (m *member) sign(name string, more ...string) (wait func() string) {
	args := append([]string{"sign", "--key", m.netKey, "--name", name, "--address", m.addr + "/24"}, more...)
	m.signed++
	return m.h.signing(fmt.Sprintf("%s-%d.cert", name, m.signed), append(args, m.pub)...)
}

// config is m's config as a member by certFile, with its forwards and
// more lines.
func (m *member) config(certFile, more string) string {
	return m.h.memberConfig(m.priv, m.netPub, certFile, m.fwd+more)
}

// reaches reports whether p reaches addr (tcp/7) within 1 s.
func reaches(p *peer, addr string) bool { return opens(p, addr, 7, time.Second) }

// opens reports whether a TCP connection from p through its SOCKS5 proxy
// to addr's port opens within the time given, and echoes a byte.
func opens(p *peer, addr string, port int, within time.Duration) bool {
	c, err := socksTry(p, net.JoinHostPort(addr, fmt.Sprint(port)), within)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(within))
	b := []byte{'x'}
	_, err = c.Write(b)
	if err == nil {
		_, err = io.ReadFull(c, b)
	}
	return err == nil && b[0] == 'x'
}

// mustReach waits until p reaches addr, a member it may never have
// contacted (looked up, introduced and handshaken on the way).
func mustReach(p *peer, addr string) {
	p.h.t.Helper()
	eventually(p.h.t, 10*time.Second, p.iface+" reaches "+addr, func() error {
		if !reaches(p, addr) {
			return fmt.Errorf("no echo from %s:7", addr)
		}
		return nil
	})
}

// heldAs is the valid_until of the member named name in p's status, and
// whether p holds such a member.
func heldAs(p *peer, name string) (validUntil string, held bool, err error) {
	st, err := p.status()
	if err != nil {
		return "", false, err
	}
	for _, ps := range st.Peers {
		if ps.Member && ps.Name == name {
			return ps.ValidUntil, true, nil
		}
	}
	return "", false, nil
}

// networkCounts are the members p refused, by reason (superseded,
// retired …), and the packets its policy dropped, by reason (no-rule …);
// nil where its status has none.
func networkCounts(p *peer) (refusals, dropped map[string]uint64) {
	st, err := p.status()
	if err != nil || st.Network == nil {
		return nil, nil
	}
	if st.Network.Policy != nil {
		dropped = st.Network.Policy.Dropped
	}
	return st.Network.Refusals, dropped
}

func TestRootlessCertificatesSuperseded(t *testing.T) {
	h := newHarness(t)
	netKey, netPub := h.networkKey()
	fwd := fmt.Sprintf("Forward = tcp:7=127.0.0.1:%d\n", echoServer(t))
	newMember := func(addr string) *member {
		priv, pub := h.genkey()
		return &member{h: h, netKey: netKey, netPub: netPub, priv: priv, pub: pub, addr: addr, fwd: fwd}
	}
	server, admin, witness := newMember("100.64.3.1"), newMember("100.64.3.2"), newMember("100.64.3.3") // the witness never sees the admin's new certificate
	oldBox, newBox := newMember("100.64.3.4"), newMember("100.64.3.4")                                  // the address moves to the new box

	rules := filepath.Join(h.dir, "rules.ini")
	os.WriteFile(rules, []byte(adminsToServers), 0o644)
	pol := h.signed("p100", "policy", "--key", netKey, "--seq", "100", rules)
	// The first certificates at once; the admin's new one and the new
	// box's after them, a second later.
	first := []func() string{server.sign("server", "--group", "servers"), admin.sign("admin", "--group", "admins"), witness.sign("witness"), oldBox.sign("old-box")}
	serverCert, oldCert, witnessCert, oldBoxCert := first[0](), first[1](), first[2](), first[3]()
	newCert, movedCert := admin.sign("admin"), newBox.sign("new-box")
	// tcp/22 is an echo of its own: what is tested is that it opens.
	srv := h.up("server", server.config(serverCert, fmt.Sprintf("Forward = tcp:22=127.0.0.1:%d\nPolicy = %s\n", echoServer(t), pol)))

	// The admin, signed into admins, reaches tcp/22; the witness knows it
	// by that certificate.
	adm := h.up("admin", admin.config(oldCert, ""))
	wit := h.up("witness", witness.config(witnessCert, ""))
	eventually(t, 10*time.Second, "the server enforces policy 100", func() error {
		if st, err := srv.status(); err != nil || st.Network == nil || st.Network.Policy == nil || st.Network.Policy.Seq != 100 {
			return fmt.Errorf("status %+v %v", st, err)
		}
		return nil
	})
	mustReach(adm, server.addr)
	if !opens(adm, server.addr, 22, 2*time.Second) {
		t.Fatal("the admin does not reach tcp/22 with its admins certificate")
	}
	mustReach(adm, witness.addr)

	// The witness hears nothing of the admin until the retirement: frozen
	// (SIGSTOP) while the admin runs with its new certificate, so that it
	// cannot meet that one — as it would, probing the admin the moment the
	// admin restarts.
	wit.cmd.Process.Signal(syscall.SIGSTOP)
	thaw := sync.OnceFunc(func() { wit.cmd.Process.Signal(syscall.SIGCONT) })
	defer thaw()

	// Re-signed without admins, run once: no tcp/22, the server's policy
	// drops it.
	adm.restartWith(admin.config(newCert(), ""))
	mustReach(adm, server.addr)
	_, droppedBefore := networkCounts(srv)
	if opens(adm, server.addr, 22, 2*time.Second) {
		t.Fatal("re-signed without admins, the admin still reaches tcp/22")
	}
	eventually(t, 5*time.Second, "the server's policy drops the admin's tcp/22", func() error {
		if _, dropped := networkCounts(srv); dropped["no-rule"] <= droppedBefore["no-rule"] {
			return fmt.Errorf("no-rule drops %d, %d before", dropped["no-rule"], droppedBefore["no-rule"])
		}
		return nil
	})

	// Both restart, the admin with its old certificate: still no tcp/22.
	adm.stop()
	srv.restart()
	adm.restartWith(admin.config(oldCert, ""))
	if opens(adm, server.addr, 22, 2*time.Second) {
		t.Error("after both restarted, the old certificate gave tcp/22 back")
	}
	// Refused as superseded by the rendezvous (which kept the newer in its
	// state) or, should a rendezvous introduce it all the same, by the
	// server (which kept it in IFACE.certs).
	refused := func() error {
		refusals, _ := networkCounts(srv)
		st, err := adm.status()
		if refusals["superseded"] == 0 && (err != nil || st.Network == nil || st.Network.Refused != "superseded") {
			return fmt.Errorf("no refusal as superseded at the server or the rendezvous (%v)", err)
		}
		return nil
	}
	eventually(t, 5*time.Second, "the old certificate refused as superseded", func() error {
		if refused() == nil {
			return nil
		}
		reached := reaches(adm, server.addr) // an introduction, if the rendezvous still makes one
		if err := refused(); err != nil {
			return fmt.Errorf("%v; the admin reaches the server: %v", err, reached)
		}
		return nil
	})
	refusals, _ := networkCounts(srv)
	rdvRefused := ""
	if st, err := adm.status(); err == nil && st.Network != nil {
		rdvRefused = st.Network.Refused
	}
	t.Logf("after both restarted: the old certificate got no tcp/22; the server refused it as superseded %d times, the rendezvous refuses it: %q",
		refusals["superseded"], rdvRefused)
	thaw()

	// The owner retires the old certificate: the witness, which only
	// ever saw it, lets the admin go at once and refuses it after.
	old, err := cert.ParseText(readFile(t, oldCert))
	if err != nil {
		t.Fatal(err)
	}
	if until, held, err := heldAs(wit, "admin"); err != nil || !held || until != old.NotAfter.UTC().Format(time.RFC3339) {
		t.Fatalf("before the retirement, the witness does not hold the admin by its old certificate: held %v, valid until %q (%v)", held, until, err)
	}
	retire := h.signed("retire", "revoke", "--key", netKey, "--cert", oldCert)
	start := time.Now()
	srv.publish(retire)
	eventually(t, 5*time.Second, "the witness lets the retired certificate go", func() error {
		if _, held, err := heldAs(wit, "admin"); err != nil || held {
			return fmt.Errorf("admin still a member of the witness (%v)", err)
		}
		return nil
	})
	t.Logf("retired: the witness let the old certificate go %v after publish", time.Since(start).Round(time.Millisecond))
	var toWitness, toAdmin bool
	var both sync.WaitGroup
	both.Go(func() { toWitness = reaches(adm, witness.addr) })
	both.Go(func() { toAdmin = reaches(wit, admin.addr) })
	both.Wait()
	if toWitness || toAdmin {
		t.Errorf("the witness and the retired certificate still reach each other: admin → witness %v, witness → admin %v", toWitness, toAdmin)
	}

	// An address moves: the server knows 100.64.3.4 as the old box; that
	// box leaves, the new box gets the address by a newer certificate and
	// reaches the server, which then reaches it at that address.
	old1 := h.up("old-box", oldBox.config(oldBoxCert, ""))
	mustReach(srv, oldBox.addr)
	old1.stop()
	nb := h.up("new-box", newBox.config(movedCert(), ""))
	mustReach(nb, server.addr)
	if !opens(srv, newBox.addr, 7, 2*time.Second) {
		t.Fatal("the server does not reach the moved address at the new box")
	}
	_, oldHeld, err1 := heldAs(srv, "old-box")
	_, newHeld, err2 := heldAs(srv, "new-box")
	if err1 != nil || err2 != nil || oldHeld || !newHeld {
		t.Errorf("the server's members after the move: old-box %v, new-box %v (%v %v)", oldHeld, newHeld, err1, err2)
	}
}
