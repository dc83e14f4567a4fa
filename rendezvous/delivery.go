package rendezvous

import (
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
)

// Delivery: the goroutine that sends what the outbox holds as it falls
// due, reading where members are from the registry and writing outside
// any lock.

// memberDirectory says where the members of deliveries are
// (registry.destinations).
type memberDirectory interface {
	destinations(batch []delivery, dst []destination)
}

// run sends what the outbox holds as it falls due, until done is closed.
func (ds *documents) run(done <-chan struct{}, dir memberDirectory) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		batch, next := ds.out.due(now)
		if len(batch) > 0 {
			ds.deliver(dir, batch, now)
			continue
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-done:
			return
		case <-ds.out.wake:
		case <-timer.C:
		}
	}
}

// deliver sends a batch: where its members are is read at once, the
// messages sealed and written outside the registry's lock.
func (ds *documents) deliver(dir memberDirectory, batch []delivery, now time.Time) {
	dst := make([]destination, len(batch))
	dir.destinations(batch, dst)
	for i, b := range batch {
		if dst[i].egress == nil {
			ds.out.settle(b.network, b.member) // no member there any more
		}
	}
	for i, b := range batch {
		t := &dst[i]
		if t.egress == nil {
			continue
		}
		// The member's address's budget (limits.spend) holds here too; a
		// document it holds back is sent again at its next try.
		if !ds.budget.spend(t.endpoint, now) {
			ds.stats.DocumentsPostponed.Add(1)
			continue
		}
		m := &wire.Document{Time: ds.clock.stamp(time.Now()), Doc: b.d.Bytes()}
		msg := sealFor(ds.pub, &t.shared, m)
		t.egress.WriteToUDPAddrPort(msg, t.endpoint)
		ds.stats.DocumentsSent.Add(1)
		ds.stats.DocumentBytes.Add(uint64(len(msg)))
	}
}
