package control

import (
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/tokenbucket"
	"github.com/punchtun/punchtun/tunnel/policy"
)

// Gossip: members hand each other the network's documents inside the
// tunnel (the packets are tunnel/policy's), so that a rendezvous that
// withholds one cannot keep it from a member that talks to one holding
// it, and a lossy path only delays it.
//
// Members that exchange data keep comparing summaries. Until a member's
// summary matches ours, we send it ours every gossipRetry, with the
// documents it may lack (newest first, from where the last round left
// off), backing off after gossipRetries rounds in which neither side
// changed; once they match, every gossipEvery, and at once after our
// holdings change. A summary that is not an answer is answered with ours,
// so that its sender learns whether we match. Only members that sent us
// data other than gossip within gossipActive are gossiped with: gossip is
// data to WireGuard, and two members gossiping because the other did
// would keep each other from ever going idle (MemberIdle).
//
// What a member can make us do is bounded per member (gossipGate on
// the data path, the answer budget here): summaries handled, documents
// verified, bytes answered. Answers come from a list built once per
// change of our holdings, not per question; gossip waits in a queue of its
// own (Control.gossipIn), never in the one the rendezvous's messages
// take; what is junk is counted and logged once a minute per member.

const (
	// gossipRetry spaces our summaries (and documents) to a member whose
	// summary differs from ours: at 30 % loss each way a document gets
	// through within 10 s with a chance of 1 - 0.3^10.
	gossipRetry = time.Second
	// gossipRetries is how many rounds a second are tried while neither
	// summary changes; then the spacing doubles up to gossipEvery, so
	// that two members that cannot agree (one refuses what the other
	// holds) do not resend all they hold every second for ever.
	gossipRetries = 10
	// gossipEvery spaces the comparisons with a member that matched.
	gossipEvery = 30 * time.Second
	// gossipActive: a member counts as exchanging data with us for this
	// long after its last packet that was not gossip.
	gossipActive = time.Minute
	// answerBytesPerSecond bounds what we send one member (documents, in
	// answer or on our own): 64 KiB a second carries a small network's
	// holdings (a policy and a few revocations, a few KB) in one round and
	// a large one's (hundreds of documents) within seconds, while a
	// member that asks again and again gets no more than that.
	answerBytesPerSecond = 64 << 10
	answerBurst          = 64 << 10
	// junkLogEvery spaces the log lines about one member's junk.
	junkLogEvery = time.Minute
	// answerAgain: a member that repeats a summary, ours unchanged, is
	// sent documents at most once per answerAgain.
	answerAgain = time.Second
)

// gossipPeer is what gossip keeps of one member (peer.gossip).
type gossipPeer struct {
	// theirs is the member's last summary (heard: there was one).
	theirs cert.Summary
	heard  bool
	// next is when to send our summary next; due: at once (our holdings
	// changed). tries counts the rounds since either summary changed, of
	// pair.
	next  time.Time
	due   bool
	tries int
	pair  [2]cert.Summary
	// realData is when the member last sent us data other than gossip;
	// heardAt when it last sent us gossip; active: it exchanged data at
	// the last tick.
	realData, heardAt time.Time
	active            bool
	// answered is what we last sent it documents for, and when; cursor
	// where in our answer list the next documents start; out the budget
	// of bytes sent to it.
	answered gossipAnswer
	cursor   int
	out      tokenbucket.Bucket
	// junk counts its junk since junkLogged, when it was last logged.
	junk       uint64
	junkLogged time.Time
}

// gossipAnswer is a pair of summaries documents were sent for, and when.
type gossipAnswer struct {
	theirs, ours cert.Summary
	at           time.Time
}

// gossipState is the control plane's side of gossip (documents.gossip).
type gossipState struct {
	gate    gossipGate  // bounds what each member's gossip costs, on the data path
	answers *answerList // what we hold, ready to send
	// Junk counts gossip refused: malformed, or documents that do not
	// verify or are another network's.
	Junk atomic.Uint64
}

// answerList is what we send members that lack something, built once
// per change of our holdings: the policy first, then the revocations,
// newest (highest seq) first, each a gossip body ready to send.
type answerList struct {
	ours      cert.Summary
	bodies    [][]byte
	policySeq uint64 // the policy's, if bodies[0] is it
	policy    bool
}

// answers returns the answer list of what we hold now.
func (d *documents) answers() *answerList {
	ours := d.held.Summary()
	if a := d.gossip.answers; a != nil && a.ours == ours {
		return a
	}
	a := &answerList{ours: ours}
	if p := d.held.Policy(); p != nil {
		a.policy, a.policySeq = true, p.Seq
		a.bodies = append(a.bodies, policy.Gossip{Kind: policy.GossipDocument, Doc: p.Bytes()}.Append(nil))
	}
	revs := slices.Clone(d.held.Revocations())
	slices.SortStableFunc(revs, func(x, y *cert.Document) int { return cmp.Compare(y.Seq, x.Seq) })
	for _, r := range revs {
		a.bodies = append(a.bodies, policy.Gossip{Kind: policy.GossipDocument, Doc: r.Bytes()}.Append(nil))
	}
	d.gossip.answers = a
	for p := range d.members.all() {
		p.gossip.cursor = 0 // what changed is newest: first
	}
	return a
}

// fromMember takes a gossip body from the member at src, in-tunnel,
// admitted by the gate.
func (d *documents) fromMember(src netip.Addr, body []byte, now time.Time) {
	p := d.members.holder(src)
	if p == nil || d.held == nil {
		d.dropped.Add(1)
		return
	}
	p.gossip.heardAt = now
	g, err := policy.ParseGossip(body)
	if err != nil {
		d.junk(p, err, now)
		return
	}
	switch g.Kind {
	case policy.GossipSummary:
		gp := &p.gossip
		gp.theirs, gp.heard = g.Summary, true
		ours := d.held.Summary()
		d.sendDocs(p, now)
		if g.Summary != ours && gp.active && gp.next.After(now.Add(gossipRetry)) {
			gp.next = now.Add(gossipRetry) // we differ: both sides drive
		}
		if !g.Answer {
			d.send(p, policy.Gossip{Kind: policy.GossipSummary, Summary: ours, Answer: true})
			if g.Summary == ours && !gp.due {
				gp.next = now.Add(gossipEvery) // it just compared: no need to ask it
			}
		}
	case policy.GossipDocument:
		doc, err := cert.ParseDocument(g.Doc)
		switch {
		case err != nil:
			d.Refused.Add(1)
			d.junk(p, err, now)
			return
		case doc.Network != d.held.Network():
			d.Refused.Add(1)
			d.junk(p, errors.New("another network's "+doc.KindName()), now)
			return
		case doc.Kind == cert.KindPolicy && d.held.Policy() != nil && doc.Seq < d.held.Policy().Seq:
			return // older than ours: nothing to take, nothing to log
		}
		d.add(doc, "member "+p.label(), now)
	}
}

// junk counts what a member sent that is of no use, and logs it at most
// once per junkLogEvery per member.
func (d *documents) junk(p *peer, err error, now time.Time) {
	d.gossip.Junk.Add(1)
	p.gossip.junk++
	if now.Sub(p.gossip.junkLogged) < junkLogEvery {
		return
	}
	d.log.Warn("a member sent gossip that is refused", "peer", p.label(), "err", err,
		"refused_since_last_logged", p.gossip.junk, "logged_at_most_every", junkLogEvery.String())
	p.gossip.junk, p.gossip.junkLogged = 0, now
}

// sendDocs sends member p, within its budget, the documents it may lack
// as its last summary says: nothing when it matches ours or when it was
// sent documents for the same pair of summaries within answerAgain.
func (d *documents) sendDocs(p *peer, now time.Time) {
	gp := &p.gossip
	a := d.answers()
	if !gp.heard || gp.theirs == a.ours {
		return
	}
	if last := gp.answered; last.theirs == gp.theirs && last.ours == a.ours && now.Sub(last.at) < answerAgain {
		return
	}
	gp.answered = gossipAnswer{theirs: gp.theirs, ours: a.ours, at: now}
	gp.out.Fill(now, answerBytesPerSecond, answerBurst)
	n := len(a.bodies)
	for range n {
		i := gp.cursor % n
		if i == 0 && a.policy && a.policySeq < gp.theirs.PolicySeq {
			gp.cursor++ // it holds a newer policy
			continue
		}
		cost := float64(len(a.bodies[i]) + 40)
		if gp.out.Tokens() < cost {
			return // the rest in the next round
		}
		gp.out.Spend(cost)
		gp.cursor++
		d.sendBody(p, a.bodies[i])
	}
}

// sendSummary tells member p what we hold: an answer at once; otherwise
// at the next tick (tickGossip), so that documents taken in a burst
// leave as one summary.
func (d *documents) sendSummary(p *peer, answer bool) {
	if d.held == nil {
		return
	}
	if answer {
		d.send(p, policy.Gossip{Kind: policy.GossipSummary, Summary: d.held.Summary(), Answer: true})
		return
	}
	p.gossip.due = true
}

// send hands member p a gossip body inside the tunnel.
func (d *documents) send(p *peer, g policy.Gossip) { d.sendBody(p, g.Append(nil)) }

// sendBody hands member p a gossip body inside the tunnel, to its first
// address of a family we hold an address of too, from ours of that
// family: a dual-stack member whose first address is IPv4 is reached over
// IPv6 by a member that has only IPv6.
func (d *documents) sendBody(p *peer, body []byte) {
	own := d.members.ownCert()
	if own == nil || p.member == nil {
		return
	}
	for _, theirs := range p.member.Addresses {
		dst := theirs.Addr()
		for _, a := range own.Addresses {
			if a.Addr().Is4() == dst.Is4() {
				d.inject.Inject(policy.GossipPacket(a.Addr(), dst, body))
				return
			}
		}
	}
}

// tickGossip compares summaries with the members that exchange data with
// us, as due, and tells every member of a change of our holdings. A
// member is first told once its data shows a WireGuard session (or our
// holdings change), not when it is added: a summary sent then would
// start a handshake from both sides at once, which crosses.
func (d *documents) tickGossip(now time.Time) {
	d.gossip.gate.tick(now)
	if d.held == nil {
		return
	}
	ours := d.held.Summary()
	for p := range d.members.all() {
		gp := &p.gossip
		if data := p.ep.Activity().Data; data.After(gp.heardAt) && data.After(gp.realData) && data.After(p.memberSince) {
			gp.realData = data
		}
		active := !gp.realData.IsZero() && now.Sub(gp.realData) < gossipActive
		if active && !gp.active {
			gp.due = true // a session starts, or data again after a pause
		}
		// After a change of our holdings every member hears at once, as
		// the change's own news; only those exchanging data are asked
		// again until they match.
		if gp.active = active; !gp.due && (!active || now.Before(gp.next)) {
			continue
		}
		if pair := [2]cert.Summary{gp.theirs, ours}; pair != gp.pair {
			gp.pair, gp.tries = pair, 0
		}
		d.sendDocs(p, now)
		d.send(p, policy.Gossip{Kind: policy.GossipSummary, Summary: ours})
		gp.due = false
		wait := gossipEvery
		if !gp.heard || gp.theirs != ours {
			wait = gossipRetry << max(0, min(gp.tries-gossipRetries+1, 5))
			wait = min(wait, gossipEvery)
			gp.tries++
		}
		gp.next = now.Add(wait)
	}
}
