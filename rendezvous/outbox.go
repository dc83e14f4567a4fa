package rendezvous

import (
	"bytes"
	"iter"
	"sync"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/rendezvous/wire/tokenbucket"
)

// The outbox: documents on their way to members. A new document is queued
// for every member of its network, and what a registration's summary says
// a member lacks for that member; one goroutine sends them (documents.run)
// outside the registry's lock (it only reads where members are, under the
// read lock, a batch at a time), paced per network, so that no network's
// fan-out delays anyone's registration or STUN.
//
// A new document is sent again, 1, 2, 4 and 8 s later, until the member
// shows it holds it: it hands the document back (members publish what
// they take to their rendezvous), or its registration's summary matches
// ours. What a registration's summary says a member may lack is sent once
// each registration (every RefreshInterval) until the summaries match:
// the member cannot say which of them it lacks, and a summary that never
// matches (the member holds a document this rendezvous does not) must not
// keep the network's fan-out budget busy. So a Document lost, reordered
// or delayed on the way is not lost; nor is one the member's address's
// send budget held back (counted, sent later).
const (
	// fanoutRate and fanoutBurst bound, in bytes a second, what the
	// rendezvous sends one network's members in documents: 1 MiB/s is a
	// single-key revocation (about 220 bytes sealed) to 10,000 members in
	// about 2 s.
	fanoutRate  = 1 << 20
	fanoutBurst = 64 << 10
	// maxPending bounds the documents waiting per member; maxTries the
	// sends of one document to one member (at 0, 1, 3, 7 and 15 s: past
	// the member's next registration, whose summary queues again what it
	// still lacks).
	maxPending = 16
	maxTries   = 5
	// outboxBatch bounds the sends prepared under the outbox's lock at
	// once.
	outboxBatch = 256
	// docOverhead is what a Document message adds to a document.
	docOverhead = wire.Overhead + 8 + 2
)

type outbox struct {
	mu   sync.Mutex
	nets map[cert.NetworkKey]*netOutbox
	rot  int           // where a long list of documents starts being queued
	wake chan struct{} // something new is due
}

// netOutbox is what waits for one network's members, and the network's
// bucket of bytes (fanoutRate).
type netOutbox struct {
	bytes   tokenbucket.Bucket
	members map[key.Key][]pending
}

type pending struct {
	d     *cert.Document
	due   time.Time
	tries int
}

// delivery is one document to send to one member.
type delivery struct {
	network cert.NetworkKey
	member  key.Key
	d       *cert.Document
}

func newOutbox() *outbox {
	return &outbox{nets: make(map[cert.NetworkKey]*netOutbox), wake: make(chan struct{}, 1)}
}

// queue adds docs to member's pending, up to maxPending; it returns how
// many found no room (sent at the member's next registration). Callers
// hold o.mu.
func (o *outbox) queue(network cert.NetworkKey, member key.Key, docs []*cert.Document, tries int, now time.Time) (full int) {
	n := o.nets[network]
	if n == nil {
		n = &netOutbox{bytes: tokenbucket.Full(fanoutBurst, now), members: make(map[key.Key][]pending)}
		o.nets[network] = n
	}
	ps := n.members[member]
	start := 0
	if len(docs) > maxPending {
		o.rot++
		start = o.rot % len(docs) // a member lacking many gets them over its registrations
	}
next:
	for i := range docs {
		d := docs[(start+i)%len(docs)]
		for j := range ps {
			if ps[j].d == d || bytes.Equal(ps[j].d.Bytes(), d.Bytes()) {
				ps[j].due = now // asked again: soon
				continue next
			}
		}
		if len(ps) >= maxPending {
			full++
			continue
		}
		ps = append(ps, pending{d: d, due: now, tries: tries})
	}
	n.members[member] = ps
	return full
}

// sendOnce queues docs for member, to be sent once, and wakes the sender.
func (o *outbox) sendOnce(network cert.NetworkKey, member key.Key, docs []*cert.Document, now time.Time) int {
	o.mu.Lock()
	full := o.queue(network, member, docs, maxTries-1, now)
	o.mu.Unlock()
	o.poke()
	return full
}

// fanOut queues d for every member of network, and wakes the sender.
func (o *outbox) fanOut(network cert.NetworkKey, members iter.Seq[key.Key], d *cert.Document, now time.Time) (full int) {
	o.mu.Lock()
	for k := range members {
		full += o.queue(network, k, []*cert.Document{d}, 0, now)
	}
	o.mu.Unlock()
	o.poke()
	return full
}

func (o *outbox) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// confirm takes d off member's pending: the member holds it.
func (o *outbox) confirm(network cert.NetworkKey, member key.Key, d *cert.Document) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := o.nets[network]
	if n == nil {
		return
	}
	ps := n.members[member]
	for j := range ps {
		if bytes.Equal(ps[j].d.Bytes(), d.Bytes()) {
			n.members[member] = append(ps[:j], ps[j+1:]...)
			break
		}
	}
	o.tidy(network, n, member)
}

// settle forgets what waits for member: it holds what we hold, or is no
// member any more.
func (o *outbox) settle(network cert.NetworkKey, member key.Key) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if n := o.nets[network]; n != nil {
		delete(n.members, member)
		o.tidy(network, n, member)
	}
}

// tidy drops member's entry, and n's, when nothing waits. Callers hold o.mu.
func (o *outbox) tidy(network cert.NetworkKey, n *netOutbox, member key.Key) {
	if len(n.members[member]) == 0 {
		delete(n.members, member)
	}
	if len(n.members) == 0 && n.bytes.Tokens() >= fanoutBurst {
		delete(o.nets, network)
	}
}

// due takes the deliveries due now that the networks' buckets allow, up
// to outboxBatch, and reports when the next falls due (zero: nothing
// waits).
func (o *outbox) due(now time.Time) (batch []delivery, next time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	soonest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for nk, n := range o.nets {
		n.bytes.Fill(now, fanoutRate, fanoutBurst)
	members:
		for k, ps := range n.members {
			kept := ps[:0]
			for i, p := range ps {
				if p.due.After(now) {
					soonest(p.due)
					kept = append(kept, p)
					continue
				}
				cost := float64(len(p.d.Bytes()) + docOverhead)
				if n.bytes.Tokens() < cost || len(batch) >= outboxBatch {
					if len(batch) >= outboxBatch {
						soonest(now)
					} else {
						soonest(now.Add(time.Duration((cost - n.bytes.Tokens()) / fanoutRate * float64(time.Second))))
					}
					n.members[k] = append(kept, ps[i:]...)
					break members
				}
				n.bytes.Spend(cost)
				batch = append(batch, delivery{network: nk, member: k, d: p.d})
				p.tries++
				p.due = now.Add(time.Second << (p.tries - 1))
				if p.tries < maxTries {
					soonest(p.due)
					kept = append(kept, p)
				}
			}
			n.members[k] = kept
			o.tidy(nk, n, k)
		}
		if len(n.members) == 0 {
			if n.bytes.Tokens() < fanoutBurst {
				soonest(now.Add(time.Duration((fanoutBurst - n.bytes.Tokens()) / fanoutRate * float64(time.Second))))
			} else {
				delete(o.nets, nk)
			}
		}
	}
	return batch, next
}
