package cert

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

var sshRule = Rule{
	From:  []Selector{{Kind: SelectGroup, Label: "laptops"}},
	To:    []Selector{{Kind: SelectGroup, Label: "servers"}, {Kind: SelectPrefix, Prefix: netip.MustParsePrefix("10.7.0.0/24")}},
	Allow: []Service{{Proto: ProtoTCP, From: 22, To: 22}, {Proto: ProtoICMP}},
}

func newKeyT(t testing.TB, b byte) key.Key {
	var k key.Key
	k[0], k[31] = b, 1
	return k
}

func TestDocumentRoundTrip(t *testing.T) {
	nk, _ := NewNetworkPrivate()
	pol, err := SignPolicy(nk, 42, []Rule{sshRule})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseDocumentText(pol.Text())
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != KindPolicy || got.Seq != 42 || got.Network != nk.Public() || len(got.Rules) != 1 || got.Rules[0].String() != sshRule.String() {
		t.Fatalf("parsed %+v", got)
	}
	rev, err := SignRevocation(nk, 7, []key.Key{newKeyT(t, 9), newKeyT(t, 3), newKeyT(t, 9)})
	if err != nil {
		t.Fatal(err)
	}
	got, err = ParseDocument(rev.Bytes())
	if err != nil || got.Kind != KindRevocation || len(got.Revoked) != 2 || got.Revoked[0] != newKeyT(t, 3) {
		t.Fatalf("revocation parsed %+v, %v", got, err)
	}
	// Any byte changed: refused.
	for i := range pol.Bytes() {
		b := bytes.Clone(pol.Bytes())
		b[i] ^= 0x40
		if _, err := ParseDocument(b); err == nil {
			t.Fatalf("byte %d changed, still parses", i)
		}
	}
	// A certificate is no document, and a document no certificate.
	c := mustSign(t, nk)
	if _, err := ParseDocument(c.Bytes()); err == nil {
		t.Fatal("a certificate parses as a document")
	}
	if _, err := Parse(pol.Bytes()); err == nil {
		t.Fatal("a policy parses as a certificate")
	}
}

func mustSign(t testing.TB, nk NetworkPrivate) *Cert {
	c, err := Sign(nk, Template{Member: newKeyT(t, 1), Name: "a", Addresses: []netip.Prefix{netip.MustParsePrefix("10.7.0.1/24")},
		NotBefore: time.Unix(1e9, 0), NotAfter: time.Unix(2e9, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDocumentBounds(t *testing.T) {
	nk, _ := NewNetworkPrivate()
	many := make([]Rule, 40)
	for i := range many {
		many[i] = sshRule
	}
	if _, err := SignPolicy(nk, 1, many); err == nil || !strings.Contains(err.Error(), "at most 1200") {
		t.Fatalf("a policy past MaxDocument: %v", err)
	}
	if _, err := SignPolicy(nk, 1, []Rule{{From: []Selector{{}}, To: []Selector{{}}, Allow: []Service{{Proto: ProtoICMP, From: 1}}}}); err == nil {
		t.Fatal("icmp with a port signs")
	}
	keys := make([]key.Key, MaxRevoked+1)
	for i := range keys {
		keys[i] = newKeyT(t, byte(i+1))
	}
	if _, err := SignRevocation(nk, 1, keys); err == nil {
		t.Fatal("a revocation of too many keys signs")
	}
	if _, err := SignRevocation(nk, 1, []key.Key{{}}); err == nil {
		t.Fatal("a revocation of the zero key signs")
	}
	// A policy of no rules allows nothing, and is a policy.
	if d, err := SignPolicy(nk, 1, nil); err != nil || len(d.Rules) != 0 {
		t.Fatalf("empty policy: %v", err)
	}
}

func TestHoldings(t *testing.T) {
	nk, _ := NewNetworkPrivate()
	h := NewHoldings(nk.Public())
	p1, _ := SignPolicy(nk, 1, []Rule{sshRule})
	p2, _ := SignPolicy(nk, 2, nil)
	if ok, err := h.Add(p2); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ok, err := h.Add(p1); ok || !errors.Is(err, ErrOlderPolicy) {
		t.Fatalf("older policy: %v %v", ok, err)
	}
	if ok, err := h.Add(p2); ok || err != nil {
		t.Fatalf("the same policy again: %v %v", ok, err)
	}
	other, _ := NewNetworkPrivate()
	po, _ := SignPolicy(other, 9, nil)
	if _, err := h.Add(po); ReasonOf(err) != OtherNetwork {
		t.Fatalf("another network's policy: %v", err)
	}
	if h.Policy() != p2 {
		t.Fatal("the newest policy is not held")
	}
	r1, _ := SignRevocation(nk, 1, []key.Key{newKeyT(t, 5)})
	r2, _ := SignRevocation(nk, 1, []key.Key{newKeyT(t, 6)})
	g := NewHoldings(nk.Public())
	g.Add(r2)
	if s := h.Summary(); s == g.Summary() || s.PolicySeq != 2 {
		t.Fatalf("summaries %+v %+v", s, g.Summary())
	}
	h.Add(r1)
	// What each sends the other converges them.
	for _, d := range h.For(g.Summary()) {
		g.Add(d)
	}
	for _, d := range g.For(h.Summary()) {
		h.Add(d)
	}
	if h.Summary() != g.Summary() || !h.Revoked(newKeyT(t, 5)) || !h.Revoked(newKeyT(t, 6)) || g.Policy() != p2 {
		t.Fatalf("not converged: %+v %+v", h.Summary(), g.Summary())
	}
	if len(h.For(g.Summary())) != 0 {
		t.Fatal("matching summaries still send documents")
	}
	if s, ok := ParseSummary(AppendSummary(nil, h.Summary())); !ok || s != h.Summary() {
		t.Fatal("summary does not round-trip")
	}
}

// FuzzParseDocument signs whatever body the fuzzer makes (with the
// network key written in), so that the body's reading is what is
// fuzzed: whatever parses re-encodes to the same bytes.
func FuzzParseDocument(f *testing.F) {
	nk, _ := NewNetworkPrivate()
	pol, _ := SignPolicy(nk, 1, []Rule{sshRule, {From: []Selector{{Kind: SelectName, Label: "ci"}}, To: []Selector{{}}, Allow: []Service{{}}}})
	rev, _ := SignRevocation(nk, 1, []key.Key{{1}, {2}})
	f.Add(pol.Bytes()[:len(pol.Bytes())-64])
	f.Add(rev.Bytes()[:len(rev.Bytes())-64])
	pub := nk.Public()
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) >= docHeader {
			copy(body[2:34], pub[:])
		}
		b := append(bytes.Clone(body), ed25519.Sign(nk.key(), body)...)
		d, err := ParseDocument(b)
		if err != nil {
			return
		}
		again, err := d.appendBody(nil)
		if err != nil || !bytes.Equal(again, body) {
			t.Fatalf("%x parses, re-encodes to %x (%v)", body, again, err)
		}
	})
}
