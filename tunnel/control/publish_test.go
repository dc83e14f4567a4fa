package control

import (
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/rendezvous/wire/tokenbucket"
)

// docRendezvous plays a rendezvous that holds documents as the real one
// does: it takes at most 10 messages a second from a key (burst 20),
// drops the rest, takes what is published (unless refusing), and acks
// registrations with its summary.
type docRendezvous struct {
	h        *memberHarness
	held     *cert.Holdings
	in       tokenbucket.Bucket
	refusing bool
	// publishes are the Publish messages that came, by the second since
	// start (total: in all); dropped the messages over its rate.
	publishes map[int]int
	dropped   int
	total     int
	start     time.Time
}

func newDocRendezvous(h *memberHarness) *docRendezvous {
	h.rendezvousUp = false // this one answers instead
	h.take()
	return &docRendezvous{h: h, held: cert.NewHoldings(h.net.Public()), publishes: map[int]int{}, start: h.now}
}

// serve answers what was sent to it since it last looked.
func (r *docRendezvous) serve() (acks int) {
	h := r.h
	sent := h.take()
	h.answerSTUN(sent)
	bodies, _ := h.opened(sent, &h.rvShared)
	for _, b := range bodies {
		if _, ok := b.(*wire.Publish); ok {
			r.publishes[int(h.now.Sub(r.start)/time.Second)]++
			r.total++
		}
		if !r.in.Take(h.now, 10, 20, 1) {
			r.dropped++
			continue
		}
		switch m := b.(type) {
		case *wire.Register:
			sum := r.held.Summary()
			h.fromRendezvous(&wire.RegisterAck{Time: h.clock.Next(uint64(h.now.UnixNano())), Observed: ourPub, Flags: wire.AckRelay, Docs: &sum})
			acks++
		case *wire.Publish:
			if doc, err := cert.ParseDocument(m.Doc); err == nil && !r.refusing {
				r.held.Add(doc)
			}
		}
	}
	return acks
}

// step ticks the member once and lets the rendezvous answer.
func (r *docRendezvous) step() int {
	r.h.setNow(r.h.now.Add(tickInterval))
	r.h.runPosted()
	r.h.c.tick(r.h.now)
	return r.serve()
}

// until steps until cond holds or d passed; how long it took.
func (r *docRendezvous) until(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := r.h.now
	for r.h.now.Sub(start) < d {
		if cond() {
			return r.h.now.Sub(start), true
		}
		r.step()
	}
	return d, cond()
}

// maxPerSecond is the most Publish messages that came in one second.
func (r *docRendezvous) maxPerSecond() int {
	most := 0
	for _, n := range r.publishes {
		most = max(most, n)
	}
	return most
}

// TestPublishPacedToTheRendezvous: a member publishing 64 revocations and
// a policy at once (`network publish` of a file) sends them at a pace the
// rendezvous takes (at most publishBurst at once, then publishRate a
// second), and every one reaches it; a rendezvous that restarted empty
// gets them all again from the acks' cycle; one that takes nothing more
// is no longer sent all we hold at every ack once a full cycle changed
// nothing. Before, all 65 left at once, the rendezvous took the first 20,
// and every ack sent all 65 again, the same first 20 getting through each
// time: the list never reached it whole.
func TestPublishPacedToTheRendezvous(t *testing.T) {
	h := newMemberHarness(t)
	h.c.docs.configure(Config{Network: h.net.Public()}, h.now)
	r := newDocRendezvous(h)
	pol, _ := cert.SignPolicy(h.net, 1, nil)
	docs := []*cert.Document{pol}
	for i := range 64 {
		rev, err := cert.SignRevocation(h.net, uint64(10+i), []key.Key{{byte(i), 5}})
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, rev)
	}
	for _, d := range docs {
		if err := h.c.docs.publish(d.Bytes(), h.now); err != nil {
			t.Fatal(err)
		}
	}
	r.serve()
	burst := r.publishes[0]
	same := func() bool { return r.held.Summary() == h.c.docs.held.Summary() }
	took, ok := r.until(time.Minute, same)
	t.Logf("65 documents published: %d sent at once, all at the rendezvous after %v (%v), at most %d a second, %d messages over its rate",
		burst, took, ok, r.maxPerSecond(), r.dropped)
	if burst > 5 {
		t.Errorf("%d Publish messages at once, want at most 5", burst)
	}
	if !ok {
		t.Fatalf("the rendezvous holds %d of 65 documents after a minute", r.held.Len())
	}
	if r.maxPerSecond() > 10 || r.dropped > 0 {
		t.Errorf("at most %d Publish messages a second, %d messages over the rendezvous's rate; want at most 10 and none", r.maxPerSecond(), r.dropped)
	}

	// It restarts empty: the acks' cycle hands it everything again.
	r.held, r.publishes, r.start = cert.NewHoldings(h.net.Public()), map[int]int{}, h.now
	h.c.servers[0].reg.Update(h.now) // register now rather than at the next refresh
	base := r.total
	for start := h.now; r.total == base && h.now.Sub(start) < time.Second; {
		r.step()
	}
	if n := r.total - base; n == 0 || n > 5 {
		t.Errorf("%d Publish messages at once after the ack of a rendezvous lacking 65 documents, want 1 to 5", n)
	}
	took, ok = r.until(time.Minute, same)
	t.Logf("restarted empty: all again after %v (%v), at most %d a second, %d over its rate", took, ok, r.maxPerSecond(), r.dropped)
	if !ok {
		t.Fatalf("the restarted rendezvous holds %d of 65 documents after a minute", r.held.Len())
	}
	if r.maxPerSecond() > 10 || r.dropped > 0 {
		t.Errorf("at most %d Publish messages a second, %d over its rate", r.maxPerSecond(), r.dropped)
	}

	// Its next ack shows it matches; then it restarts empty and takes
	// nothing: after a full cycle, the acks add nothing more.
	r.until(wire.RefreshInterval+time.Second, func() bool { return false })
	r.held, r.refusing, r.publishes, r.start = cert.NewHoldings(h.net.Public()), true, map[int]int{}, h.now
	h.c.servers[0].reg.Update(h.now)
	acks, base, from := 0, r.total, 0
	for acks < 6 {
		if acks += r.step(); acks < 3 {
			from = r.total
		}
	}
	late := r.total - from
	t.Logf("a rendezvous taking nothing: %d Publish messages to its third ack, %d from its third ack to its sixth", from-base, late)
	if from-base < 65 {
		t.Errorf("%d Publish messages to a rendezvous lacking 65 documents, want all 65", from-base)
	}
	if late != 0 {
		t.Errorf("%d Publish messages from the third ack to the sixth, after a full cycle that changed nothing, want none", late)
	}
}
