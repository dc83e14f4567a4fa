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

// registerWith registers c as a member with its summary of documents and
// returns the ack and the Documents that came after it, each of a later
// Time (or the member would drop the ack as a replay).
func (c *client) registerWith(certificate []byte, network cert.NetworkKey, held cert.Summary) (*wire.RegisterAck, []*wire.Document) {
	c.t.Helper()
	c.send(&wire.Register{Time: c.now(), Network: network, Cert: certificate, Docs: &held})
	ack, ok := c.recv(2 * time.Second).(*wire.RegisterAck)
	if !ok {
		c.t.Fatal("no register ack first")
	}
	var docs []*wire.Document
	last := ack.Time
	for {
		d, ok := c.recv(200 * time.Millisecond).(*wire.Document)
		if !ok {
			return ack, docs
		}
		if d.Time <= last {
			c.t.Fatalf("a document of Time %d after one of %d", d.Time, last)
		}
		last = d.Time
		docs = append(docs, d)
	}
}

// nextDocument reads until a Document comes; nil after wait.
func (c *client) nextDocument(wait time.Duration) *wire.Document {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if d, ok := c.recv(time.Until(deadline)).(*wire.Document); ok {
			return d
		}
	}
	return nil
}

func TestDocumentsSpreadAndRevoke(t *testing.T) {
	s, addr, pub := startServer(t)
	nk := newNetwork(t)
	a, b, c := newClient(t, addr, pub), newClient(t, addr, pub), newClient(t, addr, pub)
	now := time.Now()
	ca := certFor(t, nk, a.pub(), "a", "10.7.0.1/24", now, time.Hour)
	cb := certFor(t, nk, b.pub(), "b", "10.7.0.2/24", now, time.Hour)
	cc := certFor(t, nk, c.pub(), "c", "10.7.0.3/24", now, time.Hour)
	net := nk.Public()
	for _, m := range []struct {
		c    *client
		cert []byte
	}{{a, ca}, {b, cb}, {c, cc}} {
		if ack, docs := m.c.registerWith(m.cert, net, cert.Summary{}); ack.Docs == nil || *ack.Docs != (cert.Summary{}) || len(docs) != 0 {
			t.Fatalf("first registration: ack summary %v, %d documents", ack.Docs, len(docs))
		}
	}

	// A policy handed in by a reaches b and c at once.
	pol, _ := cert.SignPolicy(nk, 5, nil)
	a.send(&wire.Publish{Time: a.now(), Doc: pol.Bytes()})
	for _, m := range []*client{b, c} {
		if d := m.nextDocument(2 * time.Second); d == nil || string(d.Doc) != string(pol.Bytes()) {
			t.Fatal("the policy did not reach a member")
		}
	}
	// Signed by another key, or an older policy: not taken, not sent.
	other := newNetwork(t)
	forged, _ := cert.SignPolicy(other, 9, nil)
	a.send(&wire.Publish{Time: a.now(), Doc: forged.Bytes()})
	older, _ := cert.SignPolicy(nk, 4, nil)
	a.send(&wire.Publish{Time: a.now(), Doc: older.Bytes()})
	if d := b.nextDocument(300 * time.Millisecond); d != nil {
		t.Fatal("a forged or older policy was sent on")
	}
	if got := s.Stats.DocumentsRefused.Load(); got != 1 {
		t.Errorf("%d documents refused, want 1 (the forged one; an older policy is no fault)", got)
	}

	// b revokes c: c loses its membership at once and is refused after.
	rev, _ := cert.SignRevocation(nk, 6, []key.Key{c.pub()})
	b.send(&wire.Publish{Time: b.now(), Doc: rev.Bytes()})
	deadline := time.Now().Add(2 * time.Second)
	var refused *wire.Refused
	for refused == nil && time.Now().Before(deadline) {
		refused, _ = c.recv(time.Until(deadline)).(*wire.Refused)
	}
	if refused == nil || cert.Reason(refused.Reason) != cert.Revoked {
		t.Fatalf("the revoked member was told %+v", refused)
	}
	if r := c.registerMember(cc); r == nil || cert.Reason(r.Reason) != cert.Revoked {
		t.Fatalf("the revoked member registers again: %+v", r)
	}
	a.send(&wire.Lookup{Time: a.now(), Addr: netip.MustParseAddr("10.7.0.3")})
	for { // a gets the documents too, its own included, before the answer
		m := a.recv(time.Second)
		if _, ok := m.(*wire.LookupMiss); ok {
			break
		}
		if _, ok := m.(*wire.Document); !ok {
			t.Fatalf("a lookup of the revoked member is answered %v, want a miss", m)
		}
	}

	// A member that registers later, holding nothing, gets both; one
	// holding both gets none.
	d := newClient(t, addr, pub)
	cd := certFor(t, nk, d.pub(), "d", "10.7.0.4/24", now, time.Hour)
	ack, docs := d.registerWith(cd, net, cert.Summary{})
	if len(docs) != 2 || ack.Docs == nil {
		t.Fatalf("a new member got %d documents, want 2", len(docs))
	}
	h := cert.NewHoldings(net)
	h.Add(pol)
	h.Add(rev)
	if *ack.Docs != h.Summary() {
		t.Fatal("the ack's summary is not of what the rendezvous holds")
	}
	if _, docs := d.registerWith(cd, net, h.Summary()); len(docs) != 0 {
		t.Fatalf("a member holding everything got %d documents", len(docs))
	}
	// A peer that is no member hands in nothing.
	e := newClient(t, addr, pub)
	e.register()
	newer, _ := cert.SignPolicy(nk, 99, nil)
	e.send(&wire.Publish{Time: e.now(), Doc: newer.Bytes()})
	if d := a.nextDocument(300 * time.Millisecond); d != nil {
		t.Fatal("a non-member's document was taken")
	}
}

func TestDocumentsPersist(t *testing.T) {
	priv, _ := key.NewPrivate()
	nk := newNetwork(t)
	first := NewServer(Config{PrivateKey: priv, Logger: slog.New(slog.DiscardHandler)})
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go first.Serve(conn, netip.AddrPort{})
	a := newClient(t, conn.LocalAddr().(*net.UDPAddr).AddrPort(), priv.Public())
	a.registerWith(certFor(t, nk, a.pub(), "a", "10.7.0.1/24", time.Now(), time.Hour), nk.Public(), cert.Summary{})
	rev, _ := cert.SignRevocation(nk, 1, []key.Key{{7}})
	a.send(&wire.Publish{Time: a.now(), Doc: rev.Bytes()})
	for deadline := time.Now().Add(2 * time.Second); first.Stats.Documents.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the revocation was not taken")
		}
	}
	state := filepath.Join(t.TempDir(), "state")
	if err := first.Save(state); err != nil {
		t.Fatal(err)
	}
	first.Close()
	conn.Close()
	second := NewServer(Config{PrivateKey: priv, Logger: slog.New(slog.DiscardHandler)})
	if _, err := second.Load(state, nil); err != nil {
		t.Fatal(err)
	}
	if !second.docs.revoked(nk.Public(), key.Key{7}) {
		t.Fatal("the revocation did not survive the restart")
	}
}
