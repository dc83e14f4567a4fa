package rendezvous

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// What a network publishes in many pieces at once is kept whatever its
// publication rate, and a revocation past both rate and budget is acted on.

// addMember makes a member of nk in-process, without a round trip: for
// networks of thousands.
func addMember(t *testing.T, s *Server, nk cert.NetworkPrivate, i int, now time.Time) key.Key {
	t.Helper()
	var k key.Key
	rand.Read(k[:])
	raw := certFor(t, nk, k, fmt.Sprintf("m%d", i), fmt.Sprintf("10.%d.%d.%d/8", 64+i>>16, i>>8&255, i&255), now.Add(-time.Minute), time.Hour)
	c, err := cert.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	rec := &peerRecord{destination: destination{egress: discardEgress{}, endpoint: netip.MustParseAddrPort("192.0.2.1:1")}, expires: now.Add(time.Hour)}
	s.reg.peers[k] = rec
	if err := s.reg.join(k, rec, c, now, &outgoing{}); err != nil {
		t.Fatal(err)
	}
	return k
}

// heldDocs counts what the store holds of nk.
func heldDocs(s *Server, nk cert.NetworkKey) int {
	s.docs.store.mu.Lock()
	defer s.docs.store.mu.Unlock()
	if n := s.docs.store.nets[nk]; n != nil {
		return n.h.Len()
	}
	return 0
}

// fillBudget makes nk's documents at the store reach budget(members)
// with single-key revocations (seq from 1), beyond any rate; it returns
// them.
func fillBudget(t *testing.T, s *Server, nk cert.NetworkPrivate, members int) []*cert.Document {
	t.Helper()
	var docs []*cert.Document
	for i := 1; ; i++ {
		var k key.Key
		rand.Read(k[:])
		rev, err := cert.SignRevocation(nk, uint64(i), []key.Key{k})
		if err != nil {
			t.Fatal(err)
		}
		_, size := s.docs.store.stats()
		if size+len(rev.Bytes()) > budget(members) {
			return docs
		}
		s.docs.store.restore(rev, time.Time{})
		docs = append(docs, rev)
	}
}

// TestManyRevocationsAllHeld: a member hands in 65 revocations (as
// `network revoke --from` makes many) at a pace within its per-key rate:
// the rendezvous holds them all, not the first pubBurst. Before: 11 of 65.
func TestManyRevocationsAllHeld(t *testing.T) {
	s, addr, pub := startServerWith(t, Config{KeyRate: 100})
	nk := newNetwork(t)
	now := time.Now()
	const docs = 65
	var revs []*cert.Document
	for i := range docs {
		var k key.Key
		rand.Read(k[:])
		rev, _ := cert.SignRevocation(nk, uint64(i+1), []key.Key{k})
		revs = append(revs, rev)
	}
	a := newClient(t, addr, pub)
	a.registerWith(certFor(t, nk, a.pub(), "a", "10.7.0.1/24", now, time.Hour), nk.Public(), cert.Summary{})
	for i := 0; budget(s.registeredIn(nk.Public())) < docs*len(revs[0].Bytes()); i++ {
		addMember(t, s, nk, i, now) // room for them all
	}
	for _, rev := range revs {
		a.send(&wire.Publish{Time: a.now(), Doc: rev.Bytes()})
		time.Sleep(20 * time.Millisecond) // 50/s, within the key's 100/s
	}
	deadline := time.Now().Add(2 * time.Second)
	for heldDocs(s, nk.Public()) < docs && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := heldDocs(s, nk.Public()); got != docs {
		t.Fatalf("the rendezvous holds %d of %d revocations handed in", got, docs)
	}
	// Those kept past the publication rate were not fanned out: a member
	// lacking them gets them at its registration.
	b := newClientAt(t, "127.0.0.9", addr, pub)
	if _, got := b.registerWith(certFor(t, nk, b.pub(), "b", "10.7.0.2/24", now, time.Hour), nk.Public(), cert.Summary{}); len(got) < maxPending {
		t.Fatalf("a member registering without documents was sent %d, want %d", len(got), maxPending)
	}
}

// registeredIn counts nk's registered members.
func (s *Server) registeredIn(nk cert.NetworkKey) int {
	s.reg.mu.RLock()
	defer s.reg.mu.RUnlock()
	if n := s.reg.networks[nk]; n != nil {
		return n.count
	}
	return 0
}

// TestRevocationPastRateAndBudgetRecorded: a revocation past both the
// publication rate and the budget evicts its key and keeps it out: the
// key registering again is refused. Before: it registered again.
func TestRevocationPastRateAndBudgetRecorded(t *testing.T) {
	s, addr, pub := startServer(t)
	nk := newNetwork(t)
	now := time.Now()
	a, c := newClient(t, addr, pub), newClient(t, addr, pub)
	a.registerWith(certFor(t, nk, a.pub(), "a", "10.7.0.1/24", now, time.Hour), nk.Public(), cert.Summary{})
	cc := certFor(t, nk, c.pub(), "c", "10.7.0.3/24", now, time.Hour)
	c.registerWith(cc, nk.Public(), cert.Summary{})
	fillBudget(t, s, nk, 2)
	s.docs.store.mu.Lock()
	rate := &s.docs.store.nets[nk.Public()].pub
	rate.Spend(rate.Tokens()) // the rate spent
	s.docs.store.mu.Unlock()
	rev, _ := cert.SignRevocation(nk, 1000, []key.Key{c.pub()})
	a.send(&wire.Publish{Time: a.now(), Doc: rev.Bytes()})
	var r *wire.Refused
	for deadline := time.Now().Add(2 * time.Second); r == nil && time.Now().Before(deadline); {
		r, _ = c.recv(time.Until(deadline)).(*wire.Refused)
	}
	if r == nil || cert.Reason(r.Reason) != cert.Revoked {
		t.Fatalf("the member named was told %+v, want revoked", r)
	}
	if r := c.registerMember(cc); r == nil || cert.Reason(r.Reason) != cert.Revoked {
		t.Fatalf("the member revoked past the rate and the budget registers again: %+v", r)
	}
}
