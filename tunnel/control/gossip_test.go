package control

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/policy"
)

// Gossip's tests: retransmission until the summaries match and periodic
// comparison (issue #32, item 4), and the bounds on what one member's
// gossip can cost (item 6).

var m8 = netip.MustParseAddr("100.64.0.8")

// gossipAt hands the control plane a gossip body from src at h.now, as
// the data path does: through the gate, then to the control goroutine.
func (h *memberHarness) gossipAt(src netip.Addr, body []byte) {
	if h.c.docs.gossip.gate.admit(src, body, h.now) {
		h.c.docs.fromMember(src, body, h.now)
	}
}

// m8Data has member m8 carry data now, as WireGuard would record it.
func (h *memberHarness) m8Data() {
	h.data.peers[key.Key{8, 8}].activity.Data = h.now
}

// gossipOut is what the control plane sent members in-tunnel.
type gossipOut struct {
	summaries, docs, docBytes int
	last                      cert.Summary // of the last summary
	kinds                     []byte
}

// takeGossip parses and clears what was injected.
func (h *memberHarness) takeGossip() gossipOut {
	h.t.Helper()
	var out gossipOut
	for _, pkt := range h.data.injected {
		g, err := policy.ParseGossip(pkt[20:])
		if err != nil {
			h.t.Fatalf("injected %x: %v", pkt, err)
		}
		out.kinds = append(out.kinds, g.Kind)
		if g.Kind == policy.GossipSummary {
			out.summaries++
			out.last = g.Summary
		} else {
			out.docs++
			out.docBytes += len(pkt)
		}
	}
	h.data.injected = nil
	return out
}

// summaryBody is a member's summary s as gossip.
func summaryBody(s cert.Summary, answer bool) []byte {
	return policy.Gossip{Kind: policy.GossipSummary, Summary: s, Answer: answer}.Append(nil)
}

// TestGossipRetransmitsUntilMatch: a member that exchanges data with us
// and whose summary stays behind ours is sent our summary and what it
// lacks every second, whatever is lost; once it matches, we compare again
// every 30 s, and at once after our holdings change. Before the fix, one
// summary at the session's first data and one per change were all: a
// lost answer was never sent again.
func TestGossipRetransmitsUntilMatch(t *testing.T) {
	h, _ := gossipHarness(t)
	h.advance(time.Second)
	h.takeGossip() // the news of the policy taken after it was added
	h.advance(2 * gossipEvery)
	if out := h.takeGossip(); out.summaries+out.docs != 0 {
		t.Fatalf("to a member that sent no data: %+v, want nothing", out)
	}
	h.m8Data()
	h.advance(tickInterval)
	if out := h.takeGossip(); out.summaries != 1 {
		t.Fatalf("at the session's first data: %d summaries, want 1", out.summaries)
	}
	// It answers: it holds nothing. Every document it then gets is lost.
	h.gossipAt(m8, summaryBody(cert.Summary{}, true))
	if out := h.takeGossip(); out.docs != 1 {
		t.Fatalf("answer to an empty summary: %d documents, want the policy", out.docs)
	}
	var rounds int
	for range 5 {
		h.m8Data()
		h.advance(time.Second)
		if out := h.takeGossip(); out.docs >= 1 && out.summaries >= 1 {
			rounds++
		}
	}
	if rounds < 4 {
		t.Fatalf("%d of 5 seconds resent the policy and our summary to a member still lacking it, want at least 4", rounds)
	}
	// It got the policy at last and says so: no more documents, and
	// our summary again only after gossipEvery.
	ours := h.c.docs.held.Summary()
	h.gossipAt(m8, summaryBody(ours, false))
	if out := h.takeGossip(); out.docs != 0 || out.summaries != 1 || out.last != ours {
		t.Fatalf("answer to a matching summary: %+v, want our summary alone", out)
	}
	var quietFor time.Duration
	for ; quietFor < 2*gossipEvery; quietFor += time.Second {
		h.m8Data()
		h.advance(time.Second)
		if out := h.takeGossip(); out.summaries > 0 {
			break
		}
	}
	if quietFor < gossipEvery-2*time.Second || quietFor > gossipEvery {
		t.Fatalf("matched, the next summary came after %v, want about %v", quietFor, gossipEvery)
	}
	// Our holdings change: it hears at once, with the new document first.
	rev, _ := cert.SignRevocation(h.net, 1, []key.Key{{9}})
	h.document(rev)
	h.m8Data()
	h.advance(tickInterval)
	out := h.takeGossip()
	if out.summaries != 1 || out.docs == 0 || out.kinds[0] != policy.GossipDocument {
		t.Fatalf("after a change: %+v, want the new document and our summary at once", out)
	}
}

// TestGossipNoKeepaliveLoop: two members whose only traffic is their
// gossip stop gossiping: gossip is data to WireGuard, and were each to
// gossip because the other did, neither would ever go idle.
func TestGossipNoKeepaliveLoop(t *testing.T) {
	h, _ := gossipHarness(t)
	h.advance(time.Second)
	h.m8Data()
	start, lastSent := h.now, h.now
	for end := h.now.Add(MemberIdle - time.Minute); h.now.Before(end); {
		h.advance(tickInterval)
		if out := h.takeGossip(); out.summaries > 0 {
			// It answers each of ours, matching: WireGuard sees data.
			lastSent = h.now
			h.m8Data()
			h.gossipAt(m8, summaryBody(h.c.docs.held.Summary(), true))
			h.takeGossip()
		}
	}
	if last, limit := lastSent.Sub(start), gossipActive+gossipEvery+time.Second; last > limit {
		t.Fatalf("gossiping %v after the last data that was not gossip, want nothing after %v", last, limit)
	}
}

// TestGossipChangeTellsIdleMembersOnce: a member in WireGuard that
// exchanges no data hears of a change of our holdings at once, as it did
// before periodic gossip, but is not asked again.
func TestGossipChangeTellsIdleMembersOnce(t *testing.T) {
	h, _ := gossipHarness(t)
	rev, _ := cert.SignRevocation(h.net, 1, []key.Key{{9}})
	h.document(rev)
	h.advance(tickInterval)
	if out := h.takeGossip(); out.summaries != 1 {
		t.Fatalf("after a change, an idle member was sent %d summaries, want 1", out.summaries)
	}
	h.advance(gossipEvery + time.Second)
	if out := h.takeGossip(); out.summaries+out.docs != 0 {
		t.Fatalf("an idle member was asked again: %+v", out)
	}
}

// TestGossipFloodBounded: a member sending 5,000 summaries in a second,
// each with another digest, through the data path's entry (Control.enqueue)
// gets at most the summary budget answered and at most the byte budget
// of documents. Before: every summary was answered with every document
// held and our summary (5,000 × 6 packets, 3.8 MB here).
func TestGossipFloodBounded(t *testing.T) {
	h, _ := gossipHarness(t)
	for i := range 4 {
		rev, _ := cert.SignRevocation(h.net, uint64(10+i), []key.Key{{byte(20 + i)}})
		h.document(rev)
	}
	h.takeGossip()
	for i := range 5000 {
		s := cert.Summary{PolicySeq: 1}
		s.Digest[0], s.Digest[1] = byte(i), byte(i>>8)
		h.c.enqueue(summaryBody(s, false), inbound{gossip: m8})
		h.drainGossip()
	}
	out := h.takeGossip()
	t.Logf("5,000 varying summaries answered with %d summaries, %d documents (%d bytes)", out.summaries, out.docs, out.docBytes)
	if out.summaries > gossipSummaryBurst+gossipSummaryRate {
		t.Errorf("%d summaries answered, want at most %d", out.summaries, gossipSummaryBurst+gossipSummaryRate)
	}
	if out.docBytes > answerBurst+answerBytesPerSecond {
		t.Errorf("%d bytes of documents answered, want at most %d", out.docBytes, answerBurst+answerBytesPerSecond)
	}
}

// drainGossip runs what is queued for the control goroutine, as run does.
func (h *memberHarness) drainGossip() {
	for {
		select {
		case m := <-h.c.gossipIn:
			h.c.docs.fromMember(m.gossip, m.pkt, m.at)
		case m := <-h.c.in:
			h.c.handle(m)
		default:
			return
		}
	}
}

// TestGossipQueueApart: while a member floods gossip faster than the
// control goroutine takes it, an introduction from the rendezvous still
// finds room. Before, both shared one 256-place queue, and the
// introduction was dropped.
func TestGossipQueueApart(t *testing.T) {
	h, _ := gossipHarness(t)
	for i := range 5000 {
		s := cert.Summary{}
		s.Digest[0], s.Digest[1] = byte(i), byte(i>>8)
		h.c.enqueue(summaryBody(s, false), inbound{gossip: m8})
	}
	k := key.Key{7, 7}
	intro := &wire.Intro{Time: h.clock.Next(uint64(h.now.UnixNano())), Peer: k, Observed: peerAddr,
		NAT: byte(nat.MappingEasy), Cert: h.sign(h.net, k, "m7", "100.64.0.7/24", h.now, time.Hour).Bytes()}
	h.c.Deliver(wire.Seal(nil, intro.Type(), h.rvPriv.Public(), &h.rvShared, intro.Append(nil)), rvAddr)
	h.drainGossip()
	if h.c.peers[k] == nil {
		t.Fatal("the rendezvous's introduction was lost under a member's gossip flood")
	}
}

// countingHandler counts the records logged at Warn and above.
type countingHandler struct{ warns atomic.Int64 }

func (c *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (c *countingHandler) Handle(context.Context, slog.Record) error {
	c.warns.Add(1)
	return nil
}
func (c *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *countingHandler) WithGroup(string) slog.Handler      { return c }

// TestGossipJunkLoggedOncePerMinute: a member sending documents of
// another network and bodies that do not parse has them counted, and
// logged once a minute, not once a packet (before: 400 log lines).
func TestGossipJunkLoggedOncePerMinute(t *testing.T) {
	h, _ := gossipHarness(t)
	logs := &countingHandler{}
	h.setLog(slog.New(logs))
	other, _ := cert.NewNetworkPrivate()
	foreign, _ := cert.SignRevocation(other, 1, []key.Key{{5}})
	junk := [][]byte{
		policy.Gossip{Kind: policy.GossipDocument, Doc: foreign.Bytes()}.Append(nil),
		policy.Gossip{Kind: policy.GossipDocument, Doc: []byte("not a document")}.Append(nil),
	}
	for range 2 {
		for i := range 200 {
			h.c.docs.fromMember(m8, junk[i%2], h.now)
			h.setNow(h.now.Add(100 * time.Millisecond))
		}
	}
	if n := logs.warns.Load(); n > 1+int64(40*time.Second/junkLogEvery) {
		t.Errorf("400 junk documents over 40 s logged %d times, want at most once a minute", n)
	}
	if n := h.c.docs.gossip.Junk.Load(); n != 400 {
		t.Errorf("%d junk counted, want 400", n)
	}
}

// TestGossipDocumentFloodBounded: a member sending 5,000 documents in a
// second that do not verify has at most the gate's document budget
// checked (each an ed25519 verification) and counted refused; before,
// every one was verified, counted and logged.
func TestGossipDocumentFloodBounded(t *testing.T) {
	h, _ := gossipHarness(t)
	other, _ := cert.NewNetworkPrivate()
	forged, _ := cert.SignRevocation(other, 1, []key.Key{{5}})
	raw := slices.Clone(forged.Bytes())
	netKey := h.net.Public()
	copy(raw[2:34], netKey[:]) // our network's key, another's signature
	body := policy.Gossip{Kind: policy.GossipDocument, Doc: raw}.Append(nil)
	before := h.c.docs.Refused.Load()
	for range 5000 {
		h.c.enqueue(body, inbound{gossip: m8})
		h.drainGossip()
	}
	checked := h.c.docs.Refused.Load() - before
	t.Logf("5,000 forged documents: %d verified and refused", checked)
	if checked > gossipDocBurst+gossipDocRate {
		t.Errorf("%d forged documents verified, want at most %d", checked, gossipDocBurst+gossipDocRate)
	}
}

// TestGossipAnswerBudget: a member lacking everything is sent at most
// answerBurst and then answerBytesPerSecond, and still gets every
// document held within a few seconds, the rounds taking up where the last
// stopped. Before, each answer was all 65 documents (74 KB) at once.
func TestGossipAnswerBudget(t *testing.T) {
	h, _ := gossipHarness(t)
	for i := range 64 {
		keys := make([]key.Key, cert.MaxRevoked)
		for j := range keys {
			keys[j] = key.Key{byte(i), byte(j), 1}
		}
		rev, err := cert.SignRevocation(h.net, uint64(100+i), keys)
		if err != nil {
			t.Fatal(err)
		}
		h.document(rev)
	}
	h.takeGossip()
	h.m8Data()
	got := map[string]bool{}
	var first int
	for s := range 5 {
		h.gossipAt(m8, summaryBody(cert.Summary{}, false))
		h.advance(time.Second)
		for _, pkt := range h.data.injected {
			if g, _ := policy.ParseGossip(pkt[20:]); g.Kind == policy.GossipDocument {
				got[string(g.Doc)] = true
			}
		}
		out := h.takeGossip()
		if s == 0 {
			first = out.docBytes
		}
		if out.docBytes > answerBurst+answerBytesPerSecond {
			t.Errorf("second %d: %d bytes of documents, want at most %d", s, out.docBytes, answerBurst+answerBytesPerSecond)
		}
		h.m8Data()
	}
	if first > answerBurst {
		t.Errorf("first answer %d bytes, want at most %d", first, answerBurst)
	}
	if want := 1 + len(h.c.docs.held.Revocations()); len(got) != want {
		t.Errorf("%d distinct documents sent in 5 s, want all %d", len(got), want)
	}
}

// TestGossipAcrossFamilies: a member whose first address is IPv4 but who
// also holds an IPv6 one is gossiped with over IPv6 by a member that has
// only IPv6. Before, only our address of the family of its first was
// tried, and an IPv6-only member never gossiped to it.
func TestGossipAcrossFamilies(t *testing.T) {
	h, data := gossipHarness(t)
	dual := key.Key{9, 9}
	c, err := cert.Sign(h.net, cert.Template{Member: dual, Name: "dual", NotBefore: h.now, NotAfter: h.now.Add(time.Hour),
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.9/24"), netip.MustParsePrefix("fd00::9/64")}})
	if err != nil {
		t.Fatal(err)
	}
	h.introduceMember(dual, c)
	p := h.c.peers[dual]
	if p == nil || p.member == nil {
		t.Fatal("the dual-stack member was not added")
	}
	own, err := cert.Sign(h.net, cert.Template{Member: h.c.pub, Name: "self", NotBefore: h.now, NotAfter: h.now.Add(time.Hour),
		Addresses: []netip.Prefix{netip.MustParsePrefix("fd00::1/64")}})
	if err != nil {
		t.Fatal(err)
	}
	h.c.members.own = own // IPv6 only from now on
	data.injected = nil
	h.c.docs.send(p, policy.Gossip{Kind: policy.GossipSummary, Summary: h.c.docs.held.Summary()})
	if len(data.injected) != 1 {
		t.Fatalf("%d gossip packets to a dual-stack member from an IPv6-only one, want 1", len(data.injected))
	}
	pkt := data.injected[0]
	if pkt[0]>>4 != 6 || netip.AddrFrom16([16]byte(pkt[8:24])) != netip.MustParseAddr("fd00::1") ||
		netip.AddrFrom16([16]byte(pkt[24:40])) != netip.MustParseAddr("fd00::9") {
		t.Fatalf("gossip packet %x, want IPv6 from fd00::1 to fd00::9", pkt[:min(40, len(pkt))])
	}
}
