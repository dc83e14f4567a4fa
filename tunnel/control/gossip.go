package control

import (
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/tunnel/policy"
)

// Gossip: members hand each other the network's documents inside the
// tunnel (the packets are tunnel/policy's), so that a rendezvous that
// withholds one cannot keep it from a member that talks to one holding
// it.

// gossip takes a gossip body from the member at src, in-tunnel.
func (d *documents) gossip(src netip.Addr, body []byte, now time.Time) {
	p := d.c.members.holder(src)
	g, err := policy.ParseGossip(body)
	if p == nil || d.held == nil || err != nil {
		d.c.Dropped.Add(1)
		return
	}
	switch g.Kind {
	case policy.GossipSummary:
		ours := d.held.Summary()
		if a := p.answered; a.theirs == g.Summary && a.ours == ours && now.Sub(a.at) < answerAgain {
			return // the same question again: one answer a second
		}
		p.answered = gossipAnswer{theirs: g.Summary, ours: ours, at: now}
		for _, doc := range d.held.For(g.Summary) {
			d.send(p, policy.Gossip{Kind: policy.GossipDocument, Doc: doc.Bytes()})
		}
		if !g.Answer && g.Summary != d.held.Summary() {
			d.sendSummary(p, true)
		}
	case policy.GossipDocument:
		doc, err := cert.ParseDocument(g.Doc)
		if err != nil {
			d.Refused.Add(1)
			d.c.log.Warn("a member sent a network document that is refused", "peer", p.label(), "err", err)
			return
		}
		d.add(doc, "member "+p.label(), now)
	}
}

// gossipAnswer is what a member was last sent in answer to its summary:
// a member that repeats a summary is answered at most once per
// answerAgain while neither side's holdings changed, so that a small
// packet cannot have us send a network's every document again and again.
type gossipAnswer struct {
	theirs, ours cert.Summary
	at           time.Time
}

const answerAgain = time.Second

// sendSummary tells member p what we hold.
func (d *documents) sendSummary(p *peer, answer bool) {
	if d.held != nil {
		d.send(p, policy.Gossip{Kind: policy.GossipSummary, Summary: d.held.Summary(), Answer: answer})
	}
}

// send hands member p a gossip body inside the tunnel, from our address
// of the family of its first.
func (d *documents) send(p *peer, g policy.Gossip) {
	own := d.c.members.own
	if own == nil || p.member == nil {
		return
	}
	dst := p.member.Addresses[0].Addr()
	for _, a := range own.Addresses {
		if a.Addr().Is4() == dst.Is4() {
			d.c.data.Inject(policy.GossipPacket(a.Addr(), dst, g.Append(nil)))
			return
		}
	}
}

// tickGossip tells members that sent us data what we hold. A member is
// told once its data shows a WireGuard session, not when it is added: a
// summary sent then would start a handshake from both sides at once,
// which crosses.
func (d *documents) tickGossip(now time.Time) {
	for _, p := range d.c.peers {
		if p.member != nil && !p.toldDocs && p.ep.Activity().Data.After(p.memberSince) {
			p.toldDocs = true
			d.sendSummary(p, false)
		}
	}
}
