package rendezvous

import (
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// TestOlderCertificateSuperseded: a member re-signed (a later not-before)
// that presents its old, still valid certificate is refused, superseded,
// also after the rendezvous restarted; the new one is taken.
func TestOlderCertificateSuperseded(t *testing.T) {
	priv, _ := key.NewPrivate()
	nk := newNetwork(t)
	first := NewServer(Config{PrivateKey: priv, Logger: slog.New(slog.DiscardHandler)})
	defer first.Close()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	go first.Serve(conn, netip.AddrPort{})
	a := newClient(t, srv, priv.Public())
	now := time.Now()
	old := certFor(t, nk, a.pub(), "a", "10.7.0.1/24", now.Add(-2*time.Hour), 24*time.Hour)
	renewed := certFor(t, nk, a.pub(), "a", "10.7.0.1/24", now.Add(-time.Hour), 24*time.Hour)
	if r := a.registerMember(renewed); r != nil {
		t.Fatalf("the new certificate is refused: %+v", r)
	}
	if r := a.registerMember(old); r == nil || cert.Reason(r.Reason) != cert.Superseded {
		t.Fatalf("the old certificate is answered %+v, want superseded", r)
	}
	state := filepath.Join(t.TempDir(), "state")
	if err := first.Save(state); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	first.Close()

	second := NewServer(Config{PrivateKey: priv, Logger: slog.New(slog.DiscardHandler)})
	defer second.Close()
	conn2, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if _, err := second.Load(state, []*net.UDPConn{conn2}); err != nil {
		t.Fatal(err)
	}
	go second.Serve(conn2, netip.AddrPort{})
	if r := a.registerMember(old); r == nil || cert.Reason(r.Reason) != cert.Superseded {
		t.Fatalf("after a restart the old certificate is answered %+v, want superseded", r)
	}
	if r := a.registerMember(renewed); r != nil {
		t.Fatalf("after a restart the new certificate is refused: %+v", r)
	}
}

// TestNewerCertificateTakesAddress: an address (and name) the owner moved
// to a new member's certificate is the new member's: the member
// registered with the older certificate gives way, and a lookup finds
// the new one. A newcomer with an older certificate, or the old member
// again while the new one is away, is refused as superseded.
func TestNewerCertificateTakesAddress(t *testing.T) {
	_, addr, pub := startServer(t)
	nk := newNetwork(t)
	now := time.Now()
	x, y, z := newClient(t, addr, pub), newClient(t, addr, pub), newClient(t, addr, pub)
	oldCert := certFor(t, nk, x.pub(), "srv", "10.7.0.5/24", now.Add(-2*time.Hour), 24*time.Hour)
	if r := x.registerMember(oldCert); r != nil {
		t.Fatalf("x refused: %+v", r)
	}
	if r := z.registerMember(certFor(t, nk, z.pub(), "z", "10.7.0.9/24", now, time.Hour)); r != nil {
		t.Fatalf("z refused: %+v", r)
	}
	if r := y.registerMember(certFor(t, nk, y.pub(), "srv2", "10.7.0.5/24", now.Add(-time.Hour), 24*time.Hour)); r != nil {
		t.Fatalf("the newer certificate's member is refused: %+v", r)
	}
	var told *wire.Refused
	for deadline := time.Now().Add(2 * time.Second); told == nil && time.Now().Before(deadline); {
		told, _ = x.recv(time.Until(deadline)).(*wire.Refused)
	}
	if told == nil || cert.Reason(told.Reason) != cert.Overlap {
		t.Fatalf("the older certificate's member was told %+v, want overlap", told)
	}
	z.send(&wire.Lookup{Time: z.now(), Addr: netip.MustParseAddr("10.7.0.5")})
	if in := z.nextIntro(y.pub()); in.Peer != y.pub() {
		t.Fatalf("the moved address is reached at %v, want the new member %v", in.Peer, y.pub())
	}
	// Older than the holder's: superseded, for the address a newer
	// certificate claims (whether or not its holder is registered).
	w := newClient(t, addr, pub)
	if r := w.registerMember(certFor(t, nk, w.pub(), "w", "10.7.0.5/24", now.Add(-3*time.Hour), 24*time.Hour)); r == nil || cert.Reason(r.Reason) != cert.Superseded {
		t.Fatalf("an older certificate's newcomer is answered %+v, want superseded", r)
	}
	// The new holder away, the old holder still cannot take it back.
	y.send(&wire.Deregister{Time: y.now()})
	if r := x.registerMember(oldCert); r == nil || cert.Reason(r.Reason) != cert.Superseded {
		t.Fatalf("with the new holder away, the old holder is answered %+v, want superseded", r)
	}
}

// TestRetiredCertificateEvicted: a revocation retiring one certificate
// ends the membership registered with it at once and refuses it after;
// the member's new certificate is taken.
func TestRetiredCertificateEvicted(t *testing.T) {
	_, addr, pub := startServer(t)
	nk := newNetwork(t)
	now := time.Now()
	a, b := newClient(t, addr, pub), newClient(t, addr, pub)
	raw := certFor(t, nk, a.pub(), "a", "10.7.0.1/24", now.Add(-time.Hour), 24*time.Hour)
	old, _ := cert.Parse(raw)
	a.registerWith(raw, nk.Public(), cert.Summary{})
	b.registerWith(certFor(t, nk, b.pub(), "b", "10.7.0.2/24", now, time.Hour), nk.Public(), cert.Summary{})
	revs, err := cert.SignRevocations(nk, 1, nil, []cert.RetiredCert{cert.RetiredOf(old)})
	if err != nil || len(revs) != 1 {
		t.Fatal(err)
	}
	b.send(&wire.Publish{Time: b.now(), Doc: revs[0].Bytes()})
	var told *wire.Refused
	for deadline := time.Now().Add(2 * time.Second); told == nil && time.Now().Before(deadline); {
		told, _ = a.recv(time.Until(deadline)).(*wire.Refused)
	}
	if told == nil || cert.Reason(told.Reason) != cert.Retired {
		t.Fatalf("the retired certificate's member was told %+v, want retired", told)
	}
	if r := a.registerMember(raw); r == nil || cert.Reason(r.Reason) != cert.Retired {
		t.Fatalf("the retired certificate registers again: %+v", r)
	}
	if r := a.registerMember(certFor(t, nk, a.pub(), "a", "10.7.0.1/24", now, 24*time.Hour)); r != nil {
		t.Fatalf("the member's new certificate is refused: %+v", r)
	}
}

// TestRevocationPastBudgetActedOn: a network that holds its budget in
// documents still takes a revocation's effect: its key is refused, though
// the document is not kept.
func TestRevocationPastBudgetActedOn(t *testing.T) {
	st := newDocStore()
	nk := newNetwork(t)
	now := time.Now()
	kept := 0
	for i := 0; ; i++ {
		now = now.Add(time.Second) // within the publication rate
		rev, _ := cert.SignRevocation(nk, uint64(i), []key.Key{{byte(i), byte(i >> 8), 1}})
		added, _, err := st.take(rev, 1, now)
		if err == errNoRoom {
			break
		}
		if !added || err != nil {
			t.Fatalf("revocation %d: %v %v", i, added, err)
		}
		kept++
	}
	_, size := st.stats()
	if size > budget(1) {
		t.Fatalf("the network holds %d bytes, over its budget %d", size, budget(1))
	}
	victim := key.Key{0xee, 1}
	rev, _ := cert.SignRevocation(nk, 1000, []key.Key{victim})
	added, _, err := st.take(rev, 1, now.Add(time.Second))
	if !added || err != errNoRoom || !st.revoked(nk.Public(), victim) {
		t.Fatalf("a revocation past the budget: new %v, %v, revoked %v", added, err, st.revoked(nk.Public(), victim))
	}
	// A cumulative revocation that covers what is held fits again.
	var all []key.Key
	for i := range kept {
		all = append(all, key.Key{byte(i), byte(i >> 8), 1})
	}
	all = append(all, victim)
	cum, err := cert.SignRevocations(nk, 2000, all, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range cum {
		if added, _, err := st.take(d, 1, now.Add(time.Hour)); !added || err != nil {
			t.Fatalf("a cumulative revocation: %v %v", added, err)
		}
	}
	t.Logf("%d single-key revocations filled the budget of %d bytes; the cumulative one holds them in %d bytes", kept+1, budget(1), func() int { _, b := st.stats(); return b }())
}
