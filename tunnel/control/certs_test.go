package control

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// signGroups signs member's certificate with groups, valid a year from
// from.
func (h *memberHarness) signGroups(member key.Key, name, addr string, from time.Time, groups ...string) *cert.Cert {
	h.t.Helper()
	c, err := cert.Sign(h.net, cert.Template{Member: member, Name: name, Addresses: []netip.Prefix{netip.MustParsePrefix(addr)},
		Groups: groups, NotBefore: from, NotAfter: from.Add(365 * 24 * time.Hour)})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// TestMemberOlderCertificateRefused: a member re-signed without admins
// presents its old certificate, still valid for a year: refused as
// superseded, here and after this member restarted (the newest kept in
// IFACE.certs), while the newer one it holds stays.
func TestMemberOlderCertificateRefused(t *testing.T) {
	dir := t.TempDir()
	statePath := filepath.Join(dir, "pt-harness.json")
	nk, _ := cert.NewNetworkPrivate()
	h := newMemberHarnessAt(t, statePath, nk)
	admin, _ := key.NewPrivate()
	old := h.signGroups(admin.Public(), "admin", "100.64.0.5/24", h.now.Add(-time.Hour), "admins")
	newer := h.signGroups(admin.Public(), "admin", "100.64.0.5/24", h.now)
	h.introduceMember(admin.Public(), old)
	h.introduceMember(admin.Public(), newer)
	p := h.c.peers[admin.Public()]
	if p == nil || len(p.member.Groups) != 0 {
		t.Fatal("the member does not hold its newer certificate")
	}
	h.introduceMember(admin.Public(), old)
	if p := h.c.peers[admin.Public()]; p == nil || len(p.member.Groups) != 0 {
		t.Fatalf("the old certificate replaced the newer (member %v)", p != nil)
	}
	if n := h.c.members.Refusals[cert.Superseded].Load(); n != 1 {
		t.Errorf("%d refusals as superseded, want 1", n)
	}

	// Restarted, with the admin presenting its old certificate first.
	h.advance(newestSaveEvery)
	h.c.shutdown()
	h2 := newMemberHarnessAt(t, statePath, nk)
	h2.introduceMember(admin.Public(), old)
	if p := h2.c.peers[admin.Public()]; p != nil {
		t.Fatalf("after a restart, the old certificate is taken: groups %v", p.member.Groups)
	}
	if n := h2.c.members.Refusals[cert.Superseded].Load(); n != 1 {
		t.Errorf("after a restart, %d refusals as superseded, want 1", n)
	}
	h2.introduceMember(admin.Public(), newer)
	if h2.c.peers[admin.Public()] == nil {
		t.Error("after a restart, the newer certificate is refused")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "pt-harness.certs")); err != nil || len(b) == 0 {
		t.Errorf("nothing kept in IFACE.certs: %v", err)
	}
}

// TestMemberCertificateRetired: a revocation that retires a member's
// certificate by fingerprint lets the member go at once and refuses that
// certificate after; another certificate of its key is taken.
func TestMemberCertificateRetired(t *testing.T) {
	h := newMemberHarness(t)
	h.c.docs.configure(Config{Network: h.net.Public()}, h.now)
	m, _ := key.NewPrivate()
	first := h.signGroups(m.Public(), "m", "100.64.0.6/24", h.now.Add(-time.Hour), "admins")
	h.introduceMember(m.Public(), first)
	if h.c.peers[m.Public()] == nil {
		t.Fatal("member not added")
	}
	docs, err := cert.SignRevocations(h.net, 1, nil, []cert.RetiredCert{cert.RetiredOf(first)})
	if err != nil || len(docs) != 1 {
		t.Fatalf("%d documents, %v", len(docs), err)
	}
	h.document(docs[0])
	if h.c.peers[m.Public()] != nil || h.wg().members[m.Public()] != nil || h.data.dsts[netip.MustParseAddr("100.64.0.6")] {
		t.Fatal("the member whose certificate is retired is still there")
	}
	h.introduceMember(m.Public(), first)
	if h.c.peers[m.Public()] != nil || h.c.members.Refusals[cert.Retired].Load() < 1 {
		t.Fatal("the retired certificate is taken again, or its refusal not counted")
	}
	h.introduceMember(m.Public(), h.signGroups(m.Public(), "m", "100.64.0.6/24", h.now))
	if h.c.peers[m.Public()] == nil {
		t.Error("a certificate of the key that is not retired is refused")
	}
	h.c.publish(h.now)
	if v := h.c.View(); v.RetiredCerts != 1 {
		t.Errorf("view: %d certificates retired, want 1", v.RetiredCerts)
	}
}

// TestOwnCertificateSeen: this member's own certificate counts among the
// newest seen: after a renewal, the config's certificate before it is
// warned of as superseded (members that saw the renewal refuse it).
func TestOwnCertificateSeen(t *testing.T) {
	h := newMemberHarness(t)
	own := h.c.members.own
	renewed := h.signGroups(h.c.pub, "self", "100.64.0.1/24", h.now.Add(time.Second))
	h.c.members.configure(Config{Network: h.net.Public(), Cert: renewed}, h.now)
	if !h.c.members.isNewest(renewed) || h.c.members.loggedOwnSuperseded {
		t.Fatal("our renewed certificate is not the newest seen of our key")
	}
	h.c.members.configure(Config{Network: h.net.Public(), Cert: own}, h.now)
	if !h.c.members.loggedOwnSuperseded || !h.c.members.isNewest(renewed) {
		t.Error("going back to the certificate before the renewal is not warned of")
	}
}
