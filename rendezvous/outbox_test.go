package rendezvous

import (
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// TestDocumentResentUntilHeld: a Document lost on its way to a member is
// sent again, until the member's registration's summary shows it holds
// what the rendezvous holds; then no more.
func TestDocumentResentUntilHeld(t *testing.T) {
	_, addr, pub := startServer(t)
	nk := newNetwork(t)
	a, b := newClient(t, addr, pub), newClient(t, addr, pub)
	now := time.Now()
	ca := certFor(t, nk, a.pub(), "a", "10.7.0.1/24", now, time.Hour)
	a.registerWith(ca, nk.Public(), cert.Summary{})
	b.registerWith(certFor(t, nk, b.pub(), "b", "10.7.0.2/24", now, time.Hour), nk.Public(), cert.Summary{})
	rev, _ := cert.SignRevocation(nk, 1, []key.Key{{9}})
	b.send(&wire.Publish{Time: b.now(), Doc: rev.Bytes()})
	if d := a.nextDocument(2 * time.Second); d == nil {
		t.Fatal("no document")
	}
	// That one was "lost": it comes again.
	sent := time.Now()
	if d := a.nextDocument(3 * time.Second); d == nil || string(d.Doc) != string(rev.Bytes()) {
		t.Fatal("a lost document was not sent again")
	}
	t.Logf("sent again after %v", time.Since(sent).Round(time.Millisecond))
	held := cert.NewHoldings(nk.Public())
	held.Add(rev)
	a.registerWith(ca, nk.Public(), held.Summary())
	if d := a.nextDocument(4 * time.Second); d != nil {
		t.Fatal("a document was sent again to a member whose summary shows it")
	}
}

// TestDocumentOverBudgetPostponed: a document the member's address's
// send budget holds back is counted and sent later, not dropped.
func TestDocumentOverBudgetPostponed(t *testing.T) {
	s, addr, pub := startServerWith(t, Config{SourceRate: 5}) // a burst of 10 per address
	nk := newNetwork(t)
	a, b := newClientAt(t, "127.0.0.5", addr, pub), newClientAt(t, "127.0.0.6", addr, pub)
	now := time.Now()
	a.registerWith(certFor(t, nk, a.pub(), "a", "10.7.0.1/24", now, time.Hour), nk.Public(), cert.Summary{})
	b.registerWith(certFor(t, nk, b.pub(), "b", "10.7.0.2/24", now, time.Hour), nk.Public(), cert.Summary{})
	// a spends its address's budget on STUN.
	for range 12 {
		_, req := nat.NewBindingRequest()
		a.sendRaw(req)
	}
	rev, _ := cert.SignRevocation(nk, 1, []key.Key{{9}})
	b.send(&wire.Publish{Time: b.now(), Doc: rev.Bytes()})
	sent := time.Now()
	deadline := sent.Add(5 * time.Second)
	for {
		m := a.recvAny(time.Until(deadline))
		if m == nil {
			t.Fatalf("the document held back by the budget never came (%d postponed)", s.Stats.DocumentsPostponed.Load())
		}
		if d, ok := m.(*wire.Document); ok && string(d.Doc) == string(rev.Bytes()) {
			break
		}
	}
	t.Logf("came after %v; %d postponed", time.Since(sent).Round(time.Millisecond), s.Stats.DocumentsPostponed.Load())
}

// recvAny is recv, STUN answers read and skipped as nothing (nil only
// after wait).
func (c *client) recvAny(wait time.Duration) wire.Body {
	c.t.Helper()
	deadline := time.Now().Add(wait)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		c.conn.SetReadDeadline(deadline)
		n, _, err := c.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil
		}
		if nat.IsSTUN(buf[:n]) {
			continue
		}
		h, err := wire.ParseHeader(buf[:n])
		if err != nil {
			continue
		}
		plain, err := wire.Open(buf[:n], &c.shared)
		if err != nil {
			c.t.Fatalf("server message fails authentication: %v", err)
		}
		if m, err := wire.Parse(h.Type, plain); err == nil {
			return m
		}
	}
	return nil
}
