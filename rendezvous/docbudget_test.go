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

// registerQuick registers c as a member, holding nothing, and reads until
// the ack: what the server sent before it is skipped.
func (c *client) registerQuick(certificate []byte, network cert.NetworkKey) {
	c.t.Helper()
	c.send(&wire.Register{Time: c.now(), Network: network, Cert: certificate, Docs: &cert.Summary{}})
	for {
		switch m := c.recv(2 * time.Second).(type) {
		case nil:
			c.t.Fatal("no register ack")
		case *wire.RegisterAck:
			return
		default:
			_ = m
		}
	}
}

// TestStrangerCannotCrowdOutRevocation: a stranger makes 1024 networks of
// its own, registers in each in turn and hands in as many documents as
// each will hold (65 each: more than the 65,536 the rendezvous once held
// for all networks together). A real network's revocation handed in after
// that is still kept, sent to its members and acted on: the revoked
// member loses its membership at once and is refused after.
func TestStrangerCannotCrowdOutRevocation(t *testing.T) {
	if testing.Short() {
		t.Skip("signs and verifies 67,000 documents")
	}
	// No per-key or per-source rate: the stranger is quick, and what is
	// tested is the store's bound.
	s, addr, pub := startServerWith(t, Config{KeyRate: -1, SourceRate: -1})
	stranger := newClient(t, addr, pub)
	const networks, perNetwork = 1024, 64
	start := time.Now()
	for i := range networks {
		nk := newNetwork(t)
		c := certFor(t, nk, stranger.pub(), "s", "10.9.0.1/24", start, time.Hour)
		stranger.registerQuick(c, nk.Public()) // a round trip: what came before is handled
		pol, _ := cert.SignPolicy(nk, 1, nil)
		stranger.send(&wire.Publish{Time: stranger.now(), Doc: pol.Bytes()})
		for j := range perNetwork {
			rev, _ := cert.SignRevocation(nk, uint64(j), []key.Key{{byte(j), byte(i), byte(i >> 8), 1}})
			stranger.send(&wire.Publish{Time: stranger.now(), Doc: rev.Bytes()})
		}
	}
	// The last batch is handled once this round trip is.
	last := newNetwork(t)
	stranger.registerQuick(certFor(t, last, stranger.pub(), "s", "10.9.0.1/24", start, time.Hour), last.Public())
	t.Logf("the stranger handed in %d documents in %v; %d taken, %d refused, %d over rate, %d over budget",
		networks*(perNetwork+1), time.Since(start).Round(time.Millisecond), s.Stats.Documents.Load(), s.Stats.DocumentsRefused.Load(),
		s.Stats.DocumentsRateLimited.Load(), s.Stats.DocumentsOverBudget.Load())

	nk := newNetwork(t)
	a, b, c := newClient(t, addr, pub), newClient(t, addr, pub), newClient(t, addr, pub)
	cc := certFor(t, nk, c.pub(), "c", "10.7.0.3/24", start, time.Hour)
	a.registerWith(certFor(t, nk, a.pub(), "a", "10.7.0.1/24", start, time.Hour), nk.Public(), cert.Summary{})
	b.registerWith(certFor(t, nk, b.pub(), "b", "10.7.0.2/24", start, time.Hour), nk.Public(), cert.Summary{})
	c.registerWith(cc, nk.Public(), cert.Summary{})
	rev, _ := cert.SignRevocation(nk, 1, []key.Key{c.pub()})
	b.send(&wire.Publish{Time: b.now(), Doc: rev.Bytes()})
	if d := a.nextDocument(2 * time.Second); d == nil || string(d.Doc) != string(rev.Bytes()) {
		t.Fatal("the real network's revocation did not reach its member")
	}
	var refused *wire.Refused
	for deadline := time.Now().Add(2 * time.Second); refused == nil && time.Now().Before(deadline); {
		refused, _ = c.recv(time.Until(deadline)).(*wire.Refused)
	}
	if refused == nil || cert.Reason(refused.Reason) != cert.Revoked {
		t.Fatalf("the revoked member was told %+v, want revoked", refused)
	}
	if r := c.registerMember(cc); r == nil || cert.Reason(r.Reason) != cert.Revoked {
		t.Fatalf("the revoked member registers again: %+v", r)
	}
	if !s.docs.revoked(nk.Public(), c.pub()) {
		t.Fatal("the real network's revocation is not kept")
	}
}

// TestOrphanedNetworkDocumentsPruned: a network's documents outlive its
// last member by orphanTTL, across a restart, and no longer.
func TestOrphanedNetworkDocumentsPruned(t *testing.T) {
	priv, _ := key.NewPrivate()
	nk := newNetwork(t)
	first := NewServer(Config{PrivateKey: priv, Logger: slog.New(slog.DiscardHandler)})
	defer first.Close()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go first.Serve(conn, netip.AddrPort{})
	a := newClient(t, conn.LocalAddr().(*net.UDPAddr).AddrPort(), priv.Public())
	a.registerWith(certFor(t, nk, a.pub(), "a", "10.7.0.1/24", time.Now(), time.Hour), nk.Public(), cert.Summary{})
	rev, _ := cert.SignRevocation(nk, 1, []key.Key{{7}})
	a.send(&wire.Publish{Time: a.now(), Doc: rev.Bytes()})
	a.send(&wire.Deregister{Time: a.now()})
	for deadline := time.Now().Add(2 * time.Second); first.Registered() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the member did not leave")
		}
	}
	left := time.Now()
	state := filepath.Join(t.TempDir(), "state")
	if err := first.Save(state); err != nil {
		t.Fatal(err)
	}
	second := NewServer(Config{PrivateKey: priv, Logger: slog.New(slog.DiscardHandler)})
	defer second.Close()
	if _, err := second.Load(state, nil); err != nil {
		t.Fatal(err)
	}
	second.expire(left.Add(23 * time.Hour))
	if !second.docs.revoked(nk.Public(), key.Key{7}) {
		t.Fatal("the documents of a network without members went within a day")
	}
	second.expire(left.Add(24*time.Hour + time.Minute))
	if second.docs.revoked(nk.Public(), key.Key{7}) {
		t.Fatal("the documents of a network without members for a day are still held, after a restart")
	}
}

// A revocation that comes past the network's publication rate is not
// kept or sent on now, but what it names loses its membership at once.
func TestRevocationPastRateActedOn(t *testing.T) {
	s, addr, pub := startServer(t)
	nk := newNetwork(t)
	a, c := newClient(t, addr, pub), newClient(t, addr, pub)
	now := time.Now()
	a.registerWith(certFor(t, nk, a.pub(), "a", "10.9.0.1/24", now, time.Hour), nk.Public(), cert.Summary{})
	c.registerWith(certFor(t, nk, c.pub(), "c", "10.9.0.3/24", now, time.Hour), nk.Public(), cert.Summary{})
	for seq := range uint64(pubBurst + 2) { // the burst spent, and then some
		pol, _ := cert.SignPolicy(nk, seq+1, nil)
		a.send(&wire.Publish{Time: a.now(), Doc: pol.Bytes()})
	}
	for end := time.Now().Add(2 * time.Second); s.Stats.DocumentsRateLimited.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the publication rate not spent")
		}
	}
	rev, _ := cert.SignRevocation(nk, 100, []key.Key{c.pub()})
	limited := s.Stats.DocumentsRateLimited.Load()
	a.send(&wire.Publish{Time: a.now(), Doc: rev.Bytes()})
	deadline := time.Now().Add(2 * time.Second)
	var refused *wire.Refused
	for refused == nil && time.Now().Before(deadline) {
		refused, _ = c.recv(time.Until(deadline)).(*wire.Refused)
	}
	if s.Stats.DocumentsRateLimited.Load() == limited {
		t.Fatal("the revocation was not past the rate: the test tests nothing")
	}
	if refused == nil || cert.Reason(refused.Reason) != cert.Revoked {
		t.Fatalf("a revocation past the rate: the member named was told %+v", refused)
	}
}
