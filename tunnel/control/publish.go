package control

import (
	"crypto/sha256"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/tokenbucket"
)

// Handing the network's documents to a rendezvous. The rendezvous takes
// at most 10 messages a second from one key (burst 20), registrations
// and lookups included, and its summary is a digest: it tells whether it
// holds all we hold, not what it lacks. So every Publish to a rendezvous
// waits in one queue of its own (publishQueue), deduplicated by the
// document's hash and bounded, and leaves at publishRate: well under the
// rendezvous's rate, with room for our registrations and lookups. New
// documents (taken from anywhere but that rendezvous) go first. Each
// registration ack whose summary differs from ours adds the next
// documents it may lack, from a cursor that moves on at each ack, so that
// a long list reaches it whole rather than the same first ones every
// time; after a full cycle through our holdings in which neither its
// summary nor ours changed (it refuses what is left, or holds what we
// do not), nothing more is added until one of them changes (or an hour
// passed: publishIdleFor).

const (
	// publishRate is how many Publish messages a second leave for one
	// rendezvous, publishBurst how many at once.
	publishRate  = 5
	publishBurst = 5
	// publishPerAck is how many documents one ack adds: as many as leave
	// before the next refresh's ack.
	publishPerAck = int(publishRate * wire.RefreshInterval / time.Second)
	// publishQueueMax bounds the documents waiting for one rendezvous; a
	// document dropped for it is handed on by a later ack's cycle.
	publishQueueMax = 1024
	// publishIdleFor is how long a rendezvous whose summary stayed what
	// it was through a full cycle is added nothing more, however many
	// acks come, unless its summary or ours changes: a rendezvous
	// that restarted empty twice between two acks looks unchanged, and
	// gets a cycle again after this long.
	publishIdleFor = time.Hour
)

// publishQueue is what waits to be published to one rendezvous, and
// where the cycle through our holdings for it stands.
type publishQueue struct {
	fresh, backlog []*cert.Document // fresh: new documents, sent first
	queued         map[[32]byte]struct{}
	out            tokenbucket.Bucket
	// cursor is where in our holdings (cert.Holdings.For) the next ack
	// starts adding; pair the summaries (theirs, ours) of the cycle under
	// way and left how many documents of it are still to add; idle: a
	// cycle of pair ended at idleAt, add nothing until pair changes (or
	// publishIdleFor passed).
	cursor int
	pair   [2]cert.Summary
	left   int
	idle   bool
	idleAt time.Time
	// dropped counts documents not queued for want of room.
	dropped uint64
}

// push queues doc unless it waits already; false when there is no room.
func (q *publishQueue) push(doc *cert.Document, fresh bool) bool {
	h := sha256.Sum256(doc.Bytes())
	if _, ok := q.queued[h]; ok {
		return true
	}
	if len(q.queued) >= publishQueueMax {
		q.dropped++
		return false
	}
	if q.queued == nil {
		q.queued = map[[32]byte]struct{}{}
	}
	q.queued[h] = struct{}{}
	if fresh {
		q.fresh = append(q.fresh, doc)
	} else {
		q.backlog = append(q.backlog, doc)
	}
	return true
}

// pop takes the next document to send, new ones first.
func (q *publishQueue) pop() *cert.Document {
	var doc *cert.Document
	switch {
	case len(q.fresh) > 0:
		doc, q.fresh[0], q.fresh = q.fresh[0], nil, q.fresh[1:]
	case len(q.backlog) > 0:
		doc, q.backlog[0], q.backlog = q.backlog[0], nil, q.backlog[1:]
	default:
		return nil
	}
	delete(q.queued, sha256.Sum256(doc.Bytes()))
	return doc
}

// len is how many documents wait.
func (q *publishQueue) len() int { return len(q.fresh) + len(q.backlog) }

// publishNew queues a document just taken for every registered
// rendezvous but from, the one it came from (nil: none), and sends what
// is due.
func (d *documents) publishNew(doc *cert.Document, from *server, now time.Time) {
	for s := range d.rv.registeredServers() {
		if s != from {
			s.publish.push(doc, true)
			d.drainPublish(s, now)
		}
	}
}

// serverHolds takes a rendezvous's summary from its registration ack and
// queues the next documents it may lack (see above).
func (d *documents) serverHolds(s *server, theirs *cert.Summary, now time.Time) {
	if d.held == nil || theirs == nil {
		return
	}
	q := &s.publish
	ours := d.held.Summary()
	if *theirs == ours {
		// It holds all we do: what an earlier cycle queued is not sent.
		for _, doc := range q.backlog {
			delete(q.queued, sha256.Sum256(doc.Bytes()))
		}
		q.backlog = nil
		q.pair, q.left, q.idle = [2]cert.Summary{}, 0, false
		return
	}
	if pair := [2]cert.Summary{*theirs, ours}; pair != q.pair {
		q.pair, q.left, q.idle = pair, -1, false // a new cycle
	}
	if q.idle && now.Sub(q.idleAt) < publishIdleFor {
		return
	}
	if q.idle {
		q.left, q.idle = -1, false // once more, in case we missed its change
	}
	docs := d.held.For(*theirs)
	if len(docs) == 0 {
		return
	}
	if q.left < 0 {
		q.left = len(docs)
	}
	for n := min(publishPerAck, q.left); n > 0; n-- {
		if !q.push(docs[q.cursor%len(docs)], false) {
			break // full: the rest at a later ack
		}
		q.cursor++
		q.left--
	}
	q.cursor %= len(docs)
	if q.left == 0 {
		q.idle, q.idleAt = true, now
	}
	d.drainPublish(s, now)
}

// drainPublish sends rendezvous s what its queue allows now.
func (d *documents) drainPublish(s *server, now time.Time) {
	q := &s.publish
	if q.len() == 0 || !s.reg.Registered() {
		return
	}
	q.out.Fill(now, publishRate, publishBurst)
	for q.out.Tokens() >= 1 {
		doc := q.pop()
		if doc == nil {
			return
		}
		q.out.Spend(1)
		d.rv.sendServer(s, &wire.Publish{Time: d.rv.stamp(), Doc: doc.Bytes()})
	}
}
