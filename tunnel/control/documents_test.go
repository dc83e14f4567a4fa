package control

import (
	"iter"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/policy"
)

func (h *memberHarness) document(d *cert.Document) {
	h.fromRendezvous(&wire.Document{Time: h.clock.Next(uint64(h.now.UnixNano())), Doc: d.Bytes()})
}

// TestDocumentsFromALyingRendezvous: what the rendezvous sends is verified
// here: another network's policy and a forged one are refused and counted;
// an older policy after a newer changes nothing; a revocation lets the
// member go and refuses it after, whatever the rendezvous introduces.
func TestDocumentsFromALyingRendezvous(t *testing.T) {
	h := newMemberHarness(t)
	h.c.docs.configure(Config{Network: h.net.Public()}, h.now)
	other, _ := cert.NewNetworkPrivate()
	foreign, _ := cert.SignPolicy(other, 50, nil)
	h.document(foreign)
	newer, _ := cert.SignPolicy(h.net, 20, nil)
	older, _ := cert.SignPolicy(h.net, 10, nil)
	h.document(newer)
	h.document(older)
	if p := h.c.docs.held.Policy(); p == nil || p.Seq != 20 {
		t.Fatalf("policy held %+v, want seq 20", p)
	}
	if got := h.c.docs.Refused.Load(); got != 1 {
		t.Errorf("%d documents refused, want 1 (the other network's)", got)
	}

	memberKey := key.Key{7, 7}
	h.introduceMember(memberKey, h.sign(h.net, memberKey, "m7", "100.64.0.7/24", h.now, 3600e9))
	if h.c.peers[memberKey] == nil {
		t.Fatal("member not added")
	}
	rev, _ := cert.SignRevocation(h.net, 1, []key.Key{memberKey})
	h.document(rev)
	if h.c.peers[memberKey] != nil || h.wg().members[memberKey] != nil {
		t.Fatal("the revoked member is still a peer or in WireGuard")
	}
	h.introduceMember(memberKey, h.sign(h.net, memberKey, "m7", "100.64.0.7/24", h.now, 7200e9))
	if h.c.peers[memberKey] != nil {
		t.Fatal("the rendezvous brought the revoked member back")
	}
	if h.c.members.Refusals[cert.Revoked].Load() == 0 {
		t.Error("the refusal of the revoked member is not counted")
	}
}

// gossipHarness is a member holding a policy, with member m8
// (100.64.0.8) added; what it injects is in data.injected.
func gossipHarness(t *testing.T) (*memberHarness, *fakeData) {
	h := newMemberHarness(t)
	h.c.docs.configure(Config{Network: h.net.Public()}, h.now)
	memberKey := key.Key{8, 8}
	h.introduceMember(memberKey, h.sign(h.net, memberKey, "m8", "100.64.0.8/24", h.now, 3600e9))
	pol, _ := cert.SignPolicy(h.net, 5, nil)
	h.document(pol)
	data := h.c.data.(*fakeData)
	data.injected = nil
	return h, data
}

// TestDocumentsGossip: a member that sends us a summary of less than we
// hold gets what it lacks in-tunnel, and our summary back; a document it
// sends us is taken like any other.
func TestDocumentsGossip(t *testing.T) {
	h, data := gossipHarness(t)

	src := netip.MustParseAddr("100.64.0.8")
	h.c.docs.fromMember(src, policy.Gossip{Kind: policy.GossipSummary}.Append(nil), h.now)
	var kinds []byte
	for _, pkt := range data.injected {
		if pkt[9] != 253 || netip.AddrFrom4([4]byte(pkt[16:20])) != src {
			t.Fatalf("gossip packet %x not of protocol 253 to the member", pkt[:20])
		}
		g, err := policy.ParseGossip(pkt[20:])
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, g.Kind)
	}
	if string(kinds) != string([]byte{policy.GossipDocument, policy.GossipSummary}) {
		t.Fatalf("answered a bare summary with %v, want the policy and our summary", kinds)
	}
	rev, _ := cert.SignRevocation(h.net, 1, []key.Key{{9}})
	h.c.docs.fromMember(src, policy.Gossip{Kind: policy.GossipDocument, Doc: rev.Bytes()}.Append(nil), h.now)
	if !h.c.docs.held.Revoked(key.Key{9}) {
		t.Fatal("a member's revocation in-tunnel was not taken")
	}
	// From an address no member holds: dropped.
	before := h.c.Dropped.Load()
	h.c.docs.fromMember(netip.MustParseAddr("100.64.0.99"), policy.Gossip{Kind: policy.GossipSummary}.Append(nil), h.now)
	if h.c.Dropped.Load() != before+1 {
		t.Error("gossip from no member was not dropped")
	}
}

// TestGossipAnswersOncePerQuestion: a member repeating one summary is
// sent documents once a second, not once a packet, and its summaries are
// answered within the gate's budget (gossipGate).
func TestGossipAnswersOncePerQuestion(t *testing.T) {
	h, _ := gossipHarness(t)
	ask := policy.Gossip{Kind: policy.GossipSummary}.Append(nil)
	for range 100 {
		h.gossipAt(m8, ask)
	}
	if out := h.takeGossip(); out.docs != 1 || out.summaries != gossipSummaryBurst {
		t.Fatalf("100 equal summaries answered with %d documents and %d summaries, want the policy once and %d summaries", out.docs, out.summaries, gossipSummaryBurst)
	}
	h.setNow(h.now.Add(answerAgain))
	h.gossipAt(m8, ask)
	if out := h.takeGossip(); out.docs != 1 || out.summaries != 1 {
		t.Fatalf("a second later: %d documents and %d summaries, want 1 and 1", out.docs, out.summaries)
	}
}

// TestDocumentReorderedByTheRendezvous: a document whose message time is
// older than the rendezvous's last message (reordered on the way, or sent
// again) is taken, not dropped as a replay: it proves itself.
func TestDocumentReorderedByTheRendezvous(t *testing.T) {
	h := newMemberHarness(t)
	h.c.docs.configure(Config{Network: h.net.Public()}, h.now)
	pol, _ := cert.SignPolicy(h.net, 7, nil)
	early := h.clock.Next(uint64(h.now.UnixNano()))
	h.fromRendezvous(&wire.LookupMiss{Time: h.clock.Next(uint64(h.now.UnixNano())), Addr: netip.MustParseAddr("100.64.0.9")})
	dropped := h.c.Dropped.Load()
	h.fromRendezvous(&wire.Document{Time: early, Doc: pol.Bytes()})
	if p := h.c.docs.held.Policy(); p == nil || p.Seq != 7 {
		t.Fatalf("a reordered document was dropped (%d control packets dropped since): policy held %+v", h.c.Dropped.Load()-dropped, p)
	}
	// Sent again, it changes nothing and is not verified again; the
	// replay window still guards the rendezvous's other messages.
	h.fromRendezvous(&wire.Document{Time: early, Doc: pol.Bytes()})
	if n := len(h.c.docs.verified); n != 1 {
		t.Errorf("%d documents remembered as verified, want 1", n)
	}
	h.fromRendezvous(&wire.LookupMiss{Time: early, Addr: netip.MustParseAddr("100.64.0.9")})
	if h.c.Dropped.Load() != dropped+1 {
		t.Error("a replayed lookup miss was not dropped")
	}
}

// The documents on their own, with no Control: fakes of the members
// (docMembers) and of the rendezvous (aloneRendezvous).

// aloneMembers are members as the documents see them: a list, and those
// evicted.
type aloneMembers struct {
	peers   []*peer
	evicted []*peer
}

func (a *aloneMembers) ownCert() *cert.Cert { return nil }
func (a *aloneMembers) all() iter.Seq[*peer] {
	return func(yield func(*peer) bool) {
		for _, p := range a.peers {
			if !yield(p) {
				return
			}
		}
	}
}
func (a *aloneMembers) holder(addr netip.Addr) *peer {
	for _, p := range a.peers {
		if p.member.Holds(addr) {
			return p
		}
	}
	return nil
}
func (a *aloneMembers) evict(p *peer, why string) {
	a.evicted = append(a.evicted, p)
	a.peers = slices.DeleteFunc(a.peers, func(q *peer) bool { return q == p })
}

// TestDocumentsAlone: a published revocation evicts the member it names
// and goes to the rendezvous; gossip from an address no member holds is
// dropped and counted.
func TestDocumentsAlone(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	now := harnessStart
	k, _ := key.NewPrivate()
	mc, err := cert.Sign(nk, cert.Template{Member: k.Public(), Name: "m7", Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.7/32")},
		NotBefore: now, NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{name: "m7", key: k.Public(), member: mc}
	members, rv := &aloneMembers{peers: []*peer{p}}, &aloneRendezvous{}
	var dropped atomic.Uint64
	d := &documents{log: slog.New(slog.DiscardHandler), members: members, rv: rv, inject: &fakeData{}, dropped: &dropped,
		kept: &kept{log: slog.New(slog.DiscardHandler)}, filter: policy.New()}
	d.configure(Config{Network: nk.Public()}, now)
	rv.s.reg.Resolved()
	rv.s.reg.Tick(now, false)
	if rv.s.reg.Acked(now, false); !rv.s.reg.Registered() {
		t.Fatal("the fake rendezvous is not registered")
	}

	rev, _ := cert.SignRevocation(nk, 1, []key.Key{k.Public()})
	if err := d.publish(rev.Bytes(), now); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(members.evicted, []*peer{p}) {
		t.Fatalf("evicted %v after its key's revocation, want m7", members.evicted)
	}
	var published int
	for _, m := range rv.sent {
		if pub, ok := m.(*wire.Publish); ok && string(pub.Doc) == string(rev.Bytes()) {
			published++
		}
	}
	if published != 1 {
		t.Fatalf("revocation published %d times to the rendezvous, want 1 (sent %v)", published, rv.sent)
	}
	if err := d.refuses(mc); cert.ReasonOf(err) != cert.Revoked {
		t.Fatalf("the revoked member's certificate: %v, want revoked", err)
	}

	d.fromMember(netip.MustParseAddr("100.64.0.9"), policy.Gossip{Kind: policy.GossipSummary}.Append(nil), now)
	if dropped.Load() != 1 {
		t.Fatalf("gossip from no member: %d dropped, want 1", dropped.Load())
	}
}
