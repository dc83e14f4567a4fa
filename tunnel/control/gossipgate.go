package control

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/tokenbucket"
	"github.com/punchtun/punchtun/tunnel/policy"
)

// The gossip gate: what a member's gossip may cost us, judged on the data
// path before the packet is copied or queued (Control.enqueue), so that a
// member that floods gossip fills neither the control plane's queues nor
// its time. Each member address has its budgets (a certificate holds at
// most cert.MaxAddresses, 4: a member's are at most 4 times these; what
// we send it is bounded per member, answerBytesPerSecond):
//
//   - summaries (and bodies that are neither summary nor document):
//     gossipSummaryRate a second, gossipSummaryBurst at once. A member
//     that follows the protocol sends one a second while we differ, one
//     in answer to each of ours, and one after each change of its
//     holdings (coalesced to one per tick): 4 a second is twice that.
//   - documents: gossipDocRate a second (each costs an ed25519
//     verification, ~60 µs: 256 a second is at most ~2 % of a core per
//     member) and gossipDocBytesRate bytes a second, twice what a member
//     sends any one member (answerBytesPerSecond).
//
// What is over budget is dropped and counted (Limited). Gossip is taken
// from any member, whatever the policy allows it: a member allowed
// nothing must still learn of revocations and new policies, and hand on
// what it holds.

const (
	gossipSummaryRate  = 4
	gossipSummaryBurst = 8
	gossipDocRate      = 256
	gossipDocBurst     = 512
	gossipDocBytesRate = 2 * answerBytesPerSecond
	gossipDocBytes     = 2 * answerBurst
	// gossipQueue bounds the gossip admitted and waiting for the control
	// goroutine (Control.gossipIn), apart from the rendezvous's messages.
	gossipQueue = 64
	// gateForget: a source not heard from for this long is forgotten
	// (its budgets are full again by then).
	gateForget = time.Minute
)

// gossipGate holds the budgets of each member address that sends gossip.
// Safe for concurrent use: the data path admits, the control goroutine
// sweeps.
type gossipGate struct {
	mu      sync.Mutex
	sources map[netip.Addr]*gossipSource
	swept   time.Time // control goroutine only
	// Limited counts the gossip packets dropped over a budget or for a
	// full queue.
	Limited atomic.Uint64
}

// gossipSource is one member address's budgets.
type gossipSource struct {
	summaries, docs, docBytes tokenbucket.Bucket
	seen                      time.Time
}

// admit reports whether gossip body from src, at now, is within src's
// budgets, and takes its cost from them; false is counted.
func (g *gossipGate) admit(src netip.Addr, body []byte, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sources == nil {
		g.sources = map[netip.Addr]*gossipSource{}
	}
	s := g.sources[src]
	if s == nil {
		s = &gossipSource{}
		g.sources[src] = s
	}
	s.seen = now
	ok := false
	if len(body) >= 2 && body[1] == policy.GossipDocument {
		s.docs.Fill(now, gossipDocRate, gossipDocBurst)
		s.docBytes.Fill(now, gossipDocBytesRate, gossipDocBytes)
		if ok = s.docs.Tokens() >= 1 && s.docBytes.Tokens() >= float64(len(body)); ok {
			s.docs.Spend(1)
			s.docBytes.Spend(float64(len(body)))
		}
	} else {
		ok = s.summaries.Take(now, gossipSummaryRate, gossipSummaryBurst, 1)
	}
	if !ok {
		g.Limited.Add(1)
	}
	return ok
}

// tick forgets, once a gateForget, the sources not heard from since: the
// map holds the members that gossiped lately, not every one that ever did.
func (g *gossipGate) tick(now time.Time) {
	if now.Sub(g.swept) < gateForget {
		return
	}
	g.swept = now
	g.mu.Lock()
	defer g.mu.Unlock()
	for a, s := range g.sources {
		if now.Sub(s.seen) >= gateForget {
			delete(g.sources, a)
		}
	}
}
