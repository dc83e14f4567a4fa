package cert

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

func keysT(t *testing.T, n int) []key.Key {
	ks := make([]key.Key, n)
	for i := range ks {
		ks[i] = testMember(t)
	}
	return ks
}

// A network revokes 10,000 keys one revocation at a time: every one is
// taken (no cap refuses any), none undoes another, and holders that saw
// them in any order, some through a cumulative list, hold the same.
func TestRevocationsHaveNoCap(t *testing.T) {
	nk := testNetwork(t)
	h := NewHoldings(nk.Public())
	ks := keysT(t, 10_000)
	singles := make([]*Document, len(ks))
	for i, k := range ks {
		d, err := SignRevocation(nk, uint64(i+1), []key.Key{k})
		if err != nil {
			t.Fatal(err)
		}
		singles[i] = d
		if ok, err := h.Add(d); !ok || err != nil {
			t.Fatalf("revocation %d: %v %v", i, ok, err)
		}
	}
	if h.RevokedKeys() != len(ks) || h.Len() != len(ks) {
		t.Fatalf("%d keys revoked in %d documents, want %d", h.RevokedKeys(), h.Len(), len(ks))
	}
	// A cumulative list of them all, in pieces, replaces the singles.
	pieces, err := SignRevocations(nk, 1<<40, ks, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pieces {
		if len(p.Bytes()) > MaxDocument {
			t.Fatalf("a piece of %d bytes", len(p.Bytes()))
		}
		h.Add(p)
	}
	if h.Len() != len(pieces) || h.RevokedKeys() != len(ks) {
		t.Fatalf("after the list: %d documents (want the %d pieces), %d keys", h.Len(), len(pieces), h.RevokedKeys())
	}
	t.Logf("10,000 keys: %d single revocations (%d bytes) or %d pieces (%d bytes)", len(singles), len(ks)*len(singles[0].Bytes()), len(pieces), h.Size())
	// Another holder sees the singles in another order, then the pieces:
	// the same summary. A single again changes nothing.
	g := NewHoldings(nk.Public())
	for _, i := range rand.Perm(len(singles))[:500] {
		g.Add(singles[i])
	}
	for _, p := range pieces {
		g.Add(p)
	}
	if g.Summary() != h.Summary() {
		t.Fatal("holders of the same revocations differ")
	}
	if ok, _ := h.Add(singles[7]); ok {
		t.Fatal("a covered revocation changed the holdings")
	}
}

// A later revocation never undoes an earlier one: a newer, smaller one
// leaves the older in force.
func TestRevocationNeverUndone(t *testing.T) {
	nk := testNetwork(t)
	h := NewHoldings(nk.Public())
	ks := keysT(t, 3)
	big, _ := SignRevocation(nk, 1, ks)
	small, _ := SignRevocation(nk, 2, ks[:1])
	h.Add(big)
	h.Add(small)
	for _, k := range ks {
		if !h.Revoked(k) {
			t.Fatal("a later revocation undid an earlier one")
		}
	}
}

// A certificate retired by fingerprint is refused, others of its key are
// not; the entry is dropped once the certificate expired.
func TestRetiredCertificate(t *testing.T) {
	nk := testNetwork(t)
	m := testMember(t)
	tpl := testTemplate(m)
	tpl.NotBefore, tpl.NotAfter = t0, t0.Add(24*time.Hour)
	old, _ := Sign(nk, tpl)
	tpl.NotBefore = t0.Add(time.Hour)
	tpl.Groups = nil
	fresh, _ := Sign(nk, tpl)
	docs, err := SignRevocations(nk, 5, nil, []RetiredCert{RetiredOf(old)})
	if err != nil || len(docs) != 1 {
		t.Fatal(err)
	}
	d, err := ParseDocument(docs[0].Bytes())
	if err != nil || len(d.Retired) != 1 || d.Retired[0] != RetiredOf(old) {
		t.Fatalf("round trip: %v %+v", err, d)
	}
	h := NewHoldings(nk.Public())
	h.Add(d)
	if ReasonOf(h.Refuses(old)) != Retired || h.Refuses(fresh) != nil {
		t.Fatalf("refuses old %v, fresh %v", h.Refuses(old), h.Refuses(fresh))
	}
	if h.Prune(t0.Add(23*time.Hour)) || h.Len() != 1 {
		t.Fatal("pruned before the certificate expired")
	}
	if !h.Prune(t0.Add(24*time.Hour)) || h.Len() != 0 || h.Size() != 0 {
		t.Fatalf("not pruned after it expired: %d held", h.Len())
	}
	if ok, _ := h.Add(d); ok {
		t.Fatal("a revocation of expired certificates only was taken again")
	}
}

// Revocations of version 1 are still read and held.
func TestRevocationVersion1(t *testing.T) {
	nk := testNetwork(t)
	k := testMember(t)
	body := []byte{KindRevocation, 1}
	pub := nk.Public()
	body = append(body, pub[:]...)
	body = append(body, 0, 0, 0, 0, 0, 0, 0, 9, 1)
	body = append(body, k[:]...)
	raw := append(bytes.Clone(body), signWith(nk, body)...)
	d, err := ParseDocument(raw)
	if err != nil || len(d.Revoked) != 1 || d.Revoked[0] != k {
		t.Fatalf("version 1: %v", err)
	}
	if again, _ := d.appendBody(nil); !bytes.Equal(again, body) {
		t.Fatal("version 1 re-encodes otherwise")
	}
}

func TestNewest(t *testing.T) {
	nk := testNetwork(t)
	m := testMember(t)
	tpl := testTemplate(m)
	tpl.NotBefore, tpl.NotAfter = t0, t0.Add(365*24*time.Hour)
	old, _ := Sign(nk, tpl)
	tpl.NotBefore, tpl.NotAfter = t0.Add(time.Hour), t0.Add(30*24*time.Hour)
	tpl.Groups = []string{"laptops"}
	fresh, _ := Sign(nk, tpl)
	n := NewNewest(nk.Public())
	now := t0.Add(2 * time.Hour)
	if n.See(old, now) != nil || n.See(fresh, now) != nil {
		t.Fatal("in order: refused")
	}
	if ReasonOf(n.See(old, now)) != Superseded {
		t.Fatal("the old certificate after the new one: not superseded")
	}
	// Kept and loaded again: the old stays refused, also after the new
	// one expired while the old is valid.
	m2 := NewNewest(nk.Public())
	if err := m2.LoadText(string(n.AppendText(nil)), now); err != nil || m2.Of(m) != fresh && m2.Of(m).Fingerprint() != fresh.Fingerprint() {
		t.Fatalf("load: %v", err)
	}
	later := t0.Add(60 * 24 * time.Hour)
	m3 := NewNewest(nk.Public())
	m3.LoadText(string(n.AppendText(nil)), later)
	if ReasonOf(m3.See(old, later)) != Superseded {
		t.Fatal("loaded after the newest expired: the old certificate is taken")
	}
	if !n.Prune(t0.Add(366*24*time.Hour)) || n.Len() != 0 {
		t.Fatal("not pruned once every certificate expired")
	}
	other := testNetwork(t)
	if ReasonOf(NewNewest(other.Public()).See(old, now)) != OtherNetwork {
		t.Fatal("another network's certificate taken")
	}
}

// Holders that take the same revocations in any order keep the same ones
// as a holder that ranks them all at once.
func TestRevocationsConverge(t *testing.T) {
	nk := testNetwork(t)
	ks := keysT(t, 6)
	for round := range 200 {
		r := rand.New(rand.NewPCG(uint64(round), 1))
		var docs []*Document
		for i := range 8 {
			var pick []key.Key
			for _, k := range ks {
				if r.IntN(3) == 0 {
					pick = append(pick, k)
				}
			}
			if len(pick) == 0 {
				continue
			}
			d, _ := SignRevocation(nk, uint64(r.IntN(3)+i%2), pick)
			docs = append(docs, d)
		}
		all := NewHoldings(nk.Public())
		all.recompute(docs)
		for range 3 {
			h := NewHoldings(nk.Public())
			for _, i := range r.Perm(len(docs)) {
				h.Add(docs[i])
			}
			if h.Summary() != all.Summary() || h.Len() != all.Len() || h.RevokedKeys() != all.RevokedKeys() {
				t.Fatalf("round %d: %d kept, %d when ranked at once", round, h.Len(), all.Len())
			}
		}
	}
}

// An address and a name moved to another member's newer certificate stay
// with it: the old holder's certificate, still valid, is superseded for
// them, also while the new holder is away and after a restart.
func TestNewestAddressMoved(t *testing.T) {
	nk := testNetwork(t)
	oldBox, newBox, other := testMember(t), testMember(t), testMember(t)
	tpl := testTemplate(oldBox)
	tpl.Name, tpl.NotBefore, tpl.NotAfter = "srv", t0, t0.Add(365*24*time.Hour)
	tpl.Addresses = []netip.Prefix{netip.MustParsePrefix("100.64.0.5/24")}
	old, _ := Sign(nk, tpl)
	tpl.Member, tpl.NotBefore, tpl.NotAfter = newBox, t0.Add(time.Hour), t0.Add(30*24*time.Hour)
	moved, _ := Sign(nk, tpl)
	tpl.Member, tpl.Name = other, "other"
	tpl.Addresses = []netip.Prefix{netip.MustParsePrefix("100.64.0.9/24")}
	unrelated, _ := Sign(nk, tpl)
	now := t0.Add(2 * time.Hour)
	n := NewNewest(nk.Public())
	if n.See(old, now) != nil || n.See(moved, now) != nil || n.See(unrelated, now) != nil {
		t.Fatal("in order: refused")
	}
	if err := n.See(old, now); ReasonOf(err) != Superseded {
		t.Fatalf("the old holder of a moved address: %v", err)
	}
	again := NewNewest(nk.Public())
	again.LoadText(string(n.AppendText(nil)), now)
	if ReasonOf(again.See(old, now)) != Superseded || again.See(unrelated, now) != nil {
		t.Fatal("after a restart the old holder takes the address back, or another member is refused")
	}
	// Once the newer claim has expired, the old certificate is no longer
	// kept from what it names.
	later := t0.Add(31 * 24 * time.Hour)
	n.Prune(later)
	if err := n.See(old, later); err != nil {
		t.Fatalf("after the newer certificate expired: %v", err)
	}
}
