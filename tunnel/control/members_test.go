package control

import (
	"iter"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// The members' parts of the Control tests' fakes (fakeData).

func (f *fakeData) Inject(pkt []byte) { f.injected = append(f.injected, pkt) }
func (f *fakeData) AddDestinations(addrs []netip.Addr) {
	if f.dsts == nil {
		f.dsts = map[netip.Addr]bool{}
	}
	for _, a := range addrs {
		f.dsts[a] = true
	}
}
func (f *fakeData) RemoveDestinations(addrs []netip.Addr) {
	for _, a := range addrs {
		delete(f.dsts, a)
	}
}
func (w *fakeWireGuard) AddMember(peer key.Key, allowed []netip.Prefix) error {
	if w.members == nil {
		w.members = map[key.Key][]netip.Prefix{}
	}
	w.members[peer] = allowed
	return nil
}
func (w *fakeWireGuard) RemoveMember(peer key.Key) error {
	if w.removeErr != nil {
		return w.removeErr
	}
	delete(w.members, peer)
	return nil
}

// memberHarness is the harness as a member of a network, registered.
type memberHarness struct {
	*harness
	net cert.NetworkPrivate
}

func newMemberHarness(t *testing.T) *memberHarness {
	t.Helper()
	nk, _ := cert.NewNetworkPrivate()
	return newMemberHarnessAt(t, "", nk)
}

// newMemberHarnessAt is newMemberHarness in network nk, keeping its state
// at statePath ("": none): a second one on the same path is the first
// restarted.
func newMemberHarnessAt(t *testing.T, statePath string, nk cert.NetworkPrivate) *memberHarness {
	t.Helper()
	h := &memberHarness{harness: newHarnessAt(t, statePath), net: nk}
	own := h.sign(h.net, h.c.pub, "self", "100.64.0.1/24", h.now, time.Hour)
	h.c.own = []netip.Prefix{netip.MustParsePrefix("100.64.0.1/24")}
	h.c.members.configure(Config{Network: h.net.Public(), Cert: own, Addresses: h.c.own, Static: []netip.Prefix{netip.MustParsePrefix("100.64.0.200/32")}}, h.now)
	h.register()
	return h
}

func (h *memberHarness) sign(nk cert.NetworkPrivate, member key.Key, name, addr string, from time.Time, d time.Duration) *cert.Cert {
	h.t.Helper()
	c, err := cert.Sign(nk, cert.Template{Member: member, Name: name, Addresses: []netip.Prefix{netip.MustParsePrefix(addr)}, NotBefore: from, NotAfter: from.Add(d)})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// introduceMember has the rendezvous introduce member with certificate c.
func (h *memberHarness) introduceMember(member key.Key, c *cert.Cert) {
	h.fromRendezvous(&wire.Intro{Time: h.clock.Next(uint64(h.now.UnixNano())), Peer: member,
		Observed: peerAddr, NAT: byte(nat.MappingEasy), Cert: c.Bytes()})
}

func (h *memberHarness) wg() *fakeWireGuard { return h.c.wg.(*fakeWireGuard) }

// lookups returns the addresses looked up among what was sent.
func (h *memberHarness) lookups() []netip.Addr {
	bodies, _ := h.opened(h.take(), &h.rvShared)
	var out []netip.Addr
	for _, b := range bodies {
		if l, ok := b.(*wire.Lookup); ok {
			out = append(out, l.Addr)
		}
	}
	return out
}

func TestMemberRegistersWithCertificate(t *testing.T) {
	h := newMemberHarness(t)
	h.c.reregister(h.now)
	h.c.tick(h.now)
	bodies, _ := h.opened(h.take(), &h.rvShared)
	for _, b := range bodies {
		if r, ok := b.(*wire.Register); ok {
			if !slices.Equal(r.Cert, h.c.members.own.Bytes()) {
				t.Fatal("registration without our certificate")
			}
			return
		}
	}
	t.Fatal("no registration")
}

// TestMemberOnDemand: a packet to an unknown address is looked up, retried
// while unanswered, and given up; an introduction with a certificate our
// network signed adds the member to WireGuard with exactly its addresses
// and hands over the held packets; the rendezvous gets no second lookup.
func TestMemberOnDemand(t *testing.T) {
	h := newMemberHarness(t)
	dst := netip.MustParseAddr("100.64.0.7")
	h.c.members.unknownDestination(dst, h.now)
	h.c.members.unknownDestination(dst, h.now) // held packets of one flow: one lookup
	if got := h.lookups(); !slices.Equal(got, []netip.Addr{dst}) {
		t.Fatalf("lookups %v, want one of %v", got, dst)
	}
	h.advance(lookupRetry)
	if got := h.lookups(); len(got) != 1 {
		t.Fatalf("no retry after %v: %v", lookupRetry, got)
	}
	h.advance(lookupRetry * lookupTries)
	h.take()
	h.advance(2 * lookupRetry)
	if got := h.lookups(); len(got) != 0 {
		t.Fatalf("still looking up after %d tries: %v", lookupTries, got)
	}

	m, _ := key.NewPrivate()
	mc := h.sign(h.net, m.Public(), "m7", "100.64.0.7/24", h.now, time.Hour)
	h.c.members.unknownDestination(dst, h.now)
	h.take()
	h.introduceMember(m.Public(), mc)
	p := h.c.peers[m.Public()]
	if p == nil || p.member == nil || p.name != "m7" {
		t.Fatal("member not added")
	}
	if got := h.wg().members[m.Public()]; !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("100.64.0.7/32")}) {
		t.Errorf("WireGuard AllowedIPs %v, want exactly the certificate's address", got)
	}
	if !h.data.dsts[dst] {
		t.Error("the data path was not told: held packets stay held")
	}
	if slices.Contains(h.c.wants, m.Public()) {
		t.Error("a member is among the wants: registrations would grow with the network")
	}
	// It punches like any peer.
	if !p.punch.Punching(h.now) {
		t.Error("not punching to the member")
	}
	h.c.members.unknownDestination(dst, h.now.Add(time.Minute))
	if got := h.lookups(); len(got) != 0 {
		t.Errorf("looked up a known member: %v", got)
	}
}

// TestMemberRefused: what a lying rendezvous may introduce, refused and
// counted each time, nothing added to WireGuard.
func TestMemberRefused(t *testing.T) {
	h := newMemberHarness(t)
	other, _ := cert.NewNetworkPrivate()
	m, _ := key.NewPrivate()
	m2, _ := key.NewPrivate()
	good := h.sign(h.net, m2.Public(), "m2", "100.64.0.2/24", h.now, time.Hour)
	h.introduceMember(m2.Public(), good)
	for _, tc := range []struct {
		name   string
		key    key.Key
		c      *cert.Cert
		reason cert.Reason
	}{
		{"another network's", m.Public(), h.sign(other, m.Public(), "m7", "100.64.0.7/24", h.now, time.Hour), cert.OtherNetwork},
		{"expired", m.Public(), h.sign(h.net, m.Public(), "m7", "100.64.0.7/24", h.now.Add(-2*time.Hour), time.Hour), cert.Expired},
		{"not yet valid", m.Public(), h.sign(h.net, m.Public(), "m7", "100.64.0.7/24", h.now.Add(time.Hour), time.Hour), cert.NotYetValid},
		{"someone else's certificate", m.Public(), good, cert.KeyMismatch},
		{"our own key", h.c.pub, h.sign(h.net, h.c.pub, "m7", "100.64.0.7/24", h.now, time.Hour), cert.KeyMismatch},
		{"a static peer's address", m.Public(), h.sign(h.net, m.Public(), "m7", "100.64.0.200/24", h.now, time.Hour), cert.Overlap},
		{"our address", m.Public(), h.sign(h.net, m.Public(), "m7", "100.64.0.1/24", h.now, time.Hour), cert.Overlap},
		{"another member's address", m.Public(), h.sign(h.net, m.Public(), "m7", "100.64.0.2/24", h.now, time.Hour), cert.Overlap},
	} {
		before := h.c.members.Refusals[tc.reason].Load()
		h.introduceMember(tc.key, tc.c)
		if _, in := h.wg().members[tc.key]; in || (tc.key != h.c.pub && h.c.peers[tc.key] != nil) {
			t.Errorf("%s: added", tc.name)
		}
		if h.c.members.Refusals[tc.reason].Load() != before+1 {
			t.Errorf("%s: not counted as %v", tc.name, tc.reason)
		}
	}
	// Forged: a byte changed after signing.
	b := good.Bytes()
	forged := append([]byte(nil), b...)
	forged[len(forged)-1] ^= 1
	h.fromRendezvous(&wire.Intro{Time: h.clock.Next(uint64(h.now.UnixNano())), Peer: m.Public(), Observed: peerAddr, Cert: forged})
	if h.c.peers[m.Public()] != nil || h.c.members.Refusals[cert.BadSignature].Load() != 1 {
		t.Error("forged certificate not refused")
	}
	if len(h.wg().members) != 1 {
		t.Errorf("WireGuard has %d members, want the one good one", len(h.wg().members))
	}
}

func TestMemberIdleAndExpiry(t *testing.T) {
	h := newMemberHarness(t)
	a, _ := key.NewPrivate()
	b, _ := key.NewPrivate()
	h.introduceMember(a.Public(), h.sign(h.net, a.Public(), "a", "100.64.0.2/24", h.now, time.Hour))
	h.introduceMember(b.Public(), h.sign(h.net, b.Public(), "b", "100.64.0.3/24", h.now, MemberIdle/2))
	// a carries data now and then; b none, and its certificate expires first.
	for end := h.now.Add(MemberIdle + time.Minute); h.now.Before(end); {
		h.data.peers[a.Public()].activity.Data = h.now
		h.advance(time.Minute)
	}
	if h.c.peers[a.Public()] == nil {
		t.Error("a member in use was let go")
	}
	if h.c.peers[b.Public()] != nil || h.wg().members[b.Public()] != nil || h.data.dsts[netip.MustParseAddr("100.64.0.3")] {
		t.Error("the member whose certificate expired is still there")
	}
	h.advance(MemberIdle + memberSweep + time.Second)
	if h.c.peers[a.Public()] != nil || h.wg().members[a.Public()] != nil {
		t.Error("an idle member was kept")
	}
	// Static peers are never let go for idling.
	if h.peer() == nil {
		t.Error("the static peer was let go")
	}
}

// TestMemberRenewal: a new certificate of a known member (its renewal,
// as an introduction carries it) replaces the old without dropping it.
func TestMemberRenewal(t *testing.T) {
	h := newMemberHarness(t)
	a, _ := key.NewPrivate()
	h.introduceMember(a.Public(), h.sign(h.net, a.Public(), "a", "100.64.0.2/24", h.now, time.Hour))
	p := h.c.peers[a.Public()]
	renewed := h.sign(h.net, a.Public(), "a", "100.64.0.2/24", h.now, 48*time.Hour)
	h.introduceMember(a.Public(), renewed)
	if h.c.peers[a.Public()] != p || !p.member.NotAfter.Equal(renewed.NotAfter) {
		t.Error("renewal did not replace the certificate in place")
	}
}

// TestMemberByName: a name not known is asked of the rendezvous once, and
// the questions waiting get the member's addresses when its introduction
// comes, or nothing on a miss or after the tries.
func TestMemberByName(t *testing.T) {
	h := newMemberHarness(t)
	if addrs, wait := h.c.members.lookupName("self", h.now); wait != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("100.64.0.1") {
		t.Fatalf("own name: %v %v", addrs, wait)
	}
	_, w1 := h.c.members.lookupName("m7", h.now)
	_, w2 := h.c.members.lookupName("m7", h.now)
	bodies, _ := h.opened(h.take(), &h.rvShared)
	asked := 0
	for _, b := range bodies {
		if l, ok := b.(*wire.Lookup); ok && l.Name == "m7" {
			asked++
		}
	}
	if asked != 1 || w1 == nil || w2 == nil {
		t.Fatalf("%d lookups for two questions, want one", asked)
	}
	m, _ := key.NewPrivate()
	h.introduceMember(m.Public(), h.sign(h.net, m.Public(), "m7", "100.64.0.7/24", h.now, time.Hour))
	for _, w := range []chan []netip.Addr{w1, w2} {
		if got := <-w; len(got) != 1 || got[0] != netip.MustParseAddr("100.64.0.7") {
			t.Errorf("answer %v", got)
		}
	}
	if addrs, wait := h.c.members.lookupName("m7", h.now); wait != nil || len(addrs) != 1 {
		t.Errorf("known member: %v %v", addrs, wait)
	}
	// A miss answers nothing; so do tries that run out.
	_, w3 := h.c.members.lookupName("nobody", h.now)
	h.fromRendezvous(&wire.LookupMiss{Time: h.clock.Next(uint64(h.now.UnixNano())), Name: "nobody"})
	if got := <-w3; got != nil {
		t.Errorf("miss answered %v", got)
	}
	_, w4 := h.c.members.lookupName("silent", h.now)
	h.advance(lookupRetry*lookupTries + time.Second)
	select {
	case got := <-w4:
		if got != nil {
			t.Errorf("unanswered lookup answered %v", got)
		}
	default:
		t.Error("a lookup the rendezvous never answered still waits")
	}
}

// TestOwnRenewalRegistersAtOnce: a reload with a renewed certificate
// registers with it at once, not at the next refresh; the refusal the
// rendezvous told of is cleared by its next ack.
func TestOwnRenewalRegistersAtOnce(t *testing.T) {
	h := newMemberHarness(t)
	h.fromRendezvous(&wire.Refused{Time: h.clock.Next(uint64(h.now.UnixNano())), Reason: byte(cert.Expired)})
	if h.c.members.refused != cert.Expired {
		t.Fatalf("refusal not kept: %v", h.c.members.refused)
	}
	renewed := h.sign(h.net, h.c.pub, "self", "100.64.0.1/24", h.now, 48*time.Hour)
	h.c.members.configure(Config{Network: h.net.Public(), Cert: renewed}, h.now)
	h.advance(tickInterval)
	bodies, _ := h.opened(h.take(), &h.rvShared)
	sent := false
	for _, b := range bodies {
		if r, ok := b.(*wire.Register); ok && slices.Equal(r.Cert, renewed.Bytes()) {
			sent = true
		}
	}
	if !sent {
		t.Fatal("no registration with the renewed certificate within a tick")
	}
	if h.c.members.refused != 0 {
		t.Errorf("refusal %v kept after the rendezvous acked again", h.c.members.refused)
	}
}

// TestMemberAddressMoved: the owner moved an address, then a name, to a
// new member's certificate; the old holder still presents its old one,
// valid for a year. The newer certificate holds them: the old holder is
// let go when the new one comes, and refused when it comes back.
func TestMemberAddressMoved(t *testing.T) {
	h := newMemberHarness(t)
	old, _ := key.NewPrivate()
	moved, _ := key.NewPrivate()
	addr := netip.MustParseAddr("100.64.0.7")
	h.introduceMember(old.Public(), h.sign(h.net, old.Public(), "old", "100.64.0.7/24", h.now.Add(-time.Hour), 365*24*time.Hour))
	if h.c.peers[old.Public()] == nil {
		t.Fatal("the old holder not added")
	}
	h.introduceMember(moved.Public(), h.sign(h.net, moved.Public(), "moved", "100.64.0.7/24", h.now, 365*24*time.Hour))
	if p := h.c.members.holder(addr); p == nil || p.key != moved.Public() {
		t.Fatalf("%v is not held by the member whose certificate is newer (held: %v)", addr, p != nil)
	}
	if h.c.peers[old.Public()] != nil || h.wg().members[old.Public()] != nil {
		t.Error("the old holder is still a peer or in WireGuard")
	}
	if got := h.wg().members[moved.Public()]; len(got) != 1 || got[0].Addr() != addr || !h.data.dsts[addr] {
		t.Errorf("the new holder is not in WireGuard (%v) or the data path (%v)", got, h.data.dsts[addr])
	}
	before := h.c.members.Refusals[cert.Superseded].Load()
	h.introduceMember(old.Public(), h.sign(h.net, old.Public(), "old", "100.64.0.7/24", h.now.Add(-time.Hour), 365*24*time.Hour))
	if h.c.peers[old.Public()] != nil || h.c.members.Refusals[cert.Superseded].Load() != before+1 {
		t.Error("the old holder's certificate took the address back")
	}
	if p := h.c.members.holder(addr); p == nil || p.key != moved.Public() {
		t.Error("the new holder lost the address")
	}

	// A name moves the same way, whatever the addresses.
	web1, _ := key.NewPrivate()
	web2, _ := key.NewPrivate()
	h.introduceMember(web1.Public(), h.sign(h.net, web1.Public(), "web", "100.64.0.8/24", h.now.Add(-time.Hour), time.Hour*2))
	h.introduceMember(web2.Public(), h.sign(h.net, web2.Public(), "web", "100.64.0.9/24", h.now, time.Hour))
	if h.c.peers[web1.Public()] != nil || h.c.peers[web2.Public()] == nil {
		t.Fatal("the name did not move to the newer certificate")
	}
	if addrs, _ := h.c.members.lookupName("web", h.now); len(addrs) != 1 || addrs[0] != netip.MustParseAddr("100.64.0.9") {
		t.Errorf("web resolves to %v, want the new holder's address", addrs)
	}
}

// members on its own, with no Control: fakes of the few things it asks
// of the rest (roster, rendezvousClient, memberDocs).

// aloneRoster is a roster of its own peers.
type aloneRoster struct {
	peers   map[key.Key]*peer
	dropped []key.Key
}

func (r *aloneRoster) newPeer(pc PeerConfig) *peer {
	p := &peer{name: pc.Name, key: pc.Key}
	r.peers[pc.Key] = p
	return p
}
func (r *aloneRoster) dropPeer(p *peer) {
	delete(r.peers, p.key)
	r.dropped = append(r.dropped, p.key)
}

// aloneRendezvous is one registered rendezvous that records what it is
// sent.
type aloneRendezvous struct {
	s            server
	sent         []wire.Body
	stamps       uint64
	reregistered int
}

func (r *aloneRendezvous) registeredServers() iter.Seq[*server] {
	return func(yield func(*server) bool) { yield(&r.s) }
}
func (r *aloneRendezvous) sendServer(_ *server, m wire.Body) { r.sent = append(r.sent, m) }
func (r *aloneRendezvous) stamp() uint64                     { r.stamps++; return r.stamps }
func (r *aloneRendezvous) reregister(time.Time)              { r.reregistered++ }

// aloneDocs refuses every certificate with refused (nil: none).
type aloneDocs struct {
	refused   error
	refilters int
}

func (d *aloneDocs) refuses(*cert.Cert) error { return d.refused }
func (d *aloneDocs) refilter()                { d.refilters++ }

// TestMembersAlone: a lookup goes to the rendezvous, an introduced
// member enters WireGuard and the data path through the roster, one the
// documents refuse does not, and an evicted one leaves all three.
func TestMembersAlone(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	ours, _ := key.NewPrivate()
	now := harnessStart
	roster, rv, docs := &aloneRoster{peers: map[key.Key]*peer{}}, &aloneRendezvous{}, &aloneDocs{}
	wg, data := &fakeWireGuard{}, &fakeData{}
	m := &members{log: slog.New(slog.DiscardHandler), self: ours.Public(), peers: roster.peers, roster: roster, rv: rv,
		docs: docs, wg: wg, dsts: data, kept: &kept{log: slog.New(slog.DiscardHandler)}}
	m.configure(Config{Network: nk.Public(), Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/24")}}, now)

	dst := netip.MustParseAddr("100.64.0.7")
	m.unknownDestination(dst, now)
	if len(rv.sent) != 1 || rv.sent[0].(*wire.Lookup).Addr != dst {
		t.Fatalf("sent %v for an unknown destination, want one lookup of %v", rv.sent, dst)
	}

	sign := func(name, addr string) (key.Key, *cert.Cert) {
		k, _ := key.NewPrivate()
		c, err := cert.Sign(nk, cert.Template{Member: k.Public(), Name: name, Addresses: []netip.Prefix{netip.MustParsePrefix(addr)},
			NotBefore: now, NotAfter: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return k.Public(), c
	}
	k7, c7 := sign("m7", "100.64.0.7/32")
	p := m.intro(&wire.Intro{Peer: k7, Cert: c7.Bytes()}, now)
	if p == nil || roster.peers[k7] != p || p.member == nil {
		t.Fatalf("introduced member %v not added as a peer", k7)
	}
	if !slices.Equal(wg.members[k7], []netip.Prefix{netip.MustParsePrefix("100.64.0.7/32")}) || !data.dsts[dst] || docs.refilters == 0 {
		t.Fatalf("member in WireGuard with %v, in the data path %v, filter told %d times", wg.members[k7], data.dsts[dst], docs.refilters)
	}

	docs.refused = &cert.Error{Reason: cert.Revoked, Detail: "by the test"}
	k8, c8 := sign("m8", "100.64.0.8/32")
	if p8 := m.intro(&wire.Intro{Peer: k8, Cert: c8.Bytes()}, now); p8 != nil || roster.peers[k8] != nil || m.Refusals[cert.Revoked].Load() != 1 {
		t.Fatalf("a member the documents refuse: peer %v, refusals %d", p8, m.Refusals[cert.Revoked].Load())
	}

	refilters := docs.refilters
	m.evict(p, "the test")
	if !slices.Equal(roster.dropped, []key.Key{k7}) || wg.members[k7] != nil || data.dsts[dst] || docs.refilters != refilters+1 {
		t.Fatalf("evicted: dropped %v, WireGuard %v, data path %v, filter told %d more", roster.dropped, wg.members[k7], data.dsts[dst], docs.refilters-refilters)
	}
}
