package rendezvous

import (
	"errors"
	"iter"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// A network's documents: its policy and revocations, signed by the
// network key (cert.Document). Any member may hand one in (Publish); the
// rendezvous verifies it against the network key, keeps the newest policy
// and the revocations in force per network, within the network's own
// budget and publication rate (docStore), and sends them
// to the network's registered members, paced and again until they show
// they hold them, and to any whose registration's summary says it lacks
// them (outbox). A revoked member's registration, or one
// with a retired certificate, loses its membership at once, and its later
// ones are refused (cert.Revoked, cert.Retired) — also when the revocation
// is past the network's budget and not kept (registry.publish).
//
// The rendezvous cannot sign: what it keeps and sends, members verify
// again. What it can do is withhold; members gossip documents to each
// other in-tunnel for that (tunnel/policy).

// documents is the networks' documents: the store and the outbox, each
// with a lock of its own, a leaf (the registry calls in holding its own),
// and the goroutine that delivers what the outbox holds (run). It learns
// of members from the registry's calls, and reads where they are through
// a memberDirectory when it delivers.
type documents struct {
	store  *docStore
	out    *outbox
	pub    key.Key // the server's, that documents are sealed from
	clock  *lockedClock
	budget sendBudget
	stats  *Stats
	log    *slog.Logger
	dirty  *atomic.Bool // the state file is to be written (Server.Save)
	// logged is when a document past its budget was last logged (Unix
	// nanoseconds).
	logged atomic.Int64
}

// sendBudget is the budget of what is sent to an address (limits.spend).
type sendBudget interface {
	spend(dst netip.AddrPort, now time.Time) bool
}

func newDocuments(pub key.Key, clock *lockedClock, budget sendBudget, stats *Stats, log *slog.Logger, dirty *atomic.Bool) *documents {
	return &documents{store: newDocStore(), out: newOutbox(), pub: pub, clock: clock, budget: budget, stats: stats, log: log, dirty: dirty}
}

// known returns the held document whose encoding raw is, nil if none: a
// member handing back what it took costs a hash, not a signature check.
func (ds *documents) known(raw []byte) *cert.Document { return ds.store.known(raw) }

// revoked reports whether network's documents revoke k.
func (ds *documents) revoked(network cert.NetworkKey, k key.Key) bool {
	return ds.store.revoked(network, k)
}

// refuses says why c may not be a member of its network of members
// registered members (docStore.refuses); a newer certificate seen marks
// the state to be saved.
func (ds *documents) refuses(c *cert.Cert, members int, now time.Time) error {
	newer, err := ds.store.refuses(c, members, now)
	if newer {
		ds.dirty.Store(true)
	}
	return err
}

// joined notes that network has members registered members, one just
// joined: its documents are no orphans.
func (ds *documents) joined(network cert.NetworkKey, members int, now time.Time) {
	if members == 1 {
		ds.store.adopt(network)
	}
	ds.store.members(network, members, now)
}

// left notes that member left network, which has members registered
// members now: nothing waits for it, and a network without members keeps
// its documents for orphanTTL.
func (ds *documents) left(network cert.NetworkKey, member key.Key, members int, now time.Time) {
	ds.out.settle(network, member)
	ds.store.members(network, members, now)
	if members == 0 {
		ds.store.orphan(network, now)
	}
}

// publication is what is to be done with a document handed in: its
// revocations acted on (evict), it fanned out to the network's members,
// and taken off what waits for its sender (confirm).
type publication struct {
	evict, fan, confirm bool
}

// take takes a verified document a member of a network of members
// registered members handed in, counts and logs it, and says what is to be
// done with it.
func (ds *documents) take(sender key.Key, d *cert.Document, members int, now time.Time) (p publication) {
	added, fan, err := ds.store.take(d, members, now)
	switch {
	case errors.Is(err, errNoRoom):
		ds.stats.DocumentsOverBudget.Add(1)
		if last := ds.logged.Load(); now.Sub(time.Unix(0, last)) >= time.Minute && ds.logged.CompareAndSwap(last, now.UnixNano()) {
			ds.log.Warn("a network's document is past its budget here: not kept (a revocation is acted on and sent on all the same)",
				"network", d.Network, "kind", d.KindName(), "seq", d.Seq, "budget", budget(members))
		}
		if d.Kind != cert.KindRevocation {
			return p
		}
		// Acted on whatever it costs here: what it names may have
		// registered again since a first copy was handed in.
		p.evict = true
		if !added {
			return p // sent on once, when it named something new here
		}
	case err != nil:
		if !errors.Is(err, cert.ErrOlderPolicy) {
			ds.stats.DocumentsRefused.Add(1)
		}
		return p
	case !added:
		// Held already: the sender holds it too (members hand in what
		// they take), so it need not be sent to it again.
		return publication{confirm: true}
	default:
		ds.dirty.Store(true)
		ds.stats.Documents.Add(1)
		ds.log.Info("network document taken", "network", d.Network, "kind", d.KindName(), "seq", d.Seq, "from", sender)
		p.evict = d.Kind == cert.KindRevocation
	}
	if !fan {
		// Kept, and acted on, but past the network's publication rate:
		// not fanned out now. The members' registrations' summaries show
		// they lack it (documentsFor sends it then), and its holders hand
		// it in again.
		ds.stats.DocumentsRateLimited.Add(1)
	}
	return publication{evict: p.evict, fan: fan, confirm: true}
}

// fanOut queues d for every member of network.
func (ds *documents) fanOut(network cert.NetworkKey, members iter.Seq[key.Key], d *cert.Document, now time.Time) {
	if full := ds.out.fanOut(network, members, d, now); full > 0 {
		ds.stats.DocumentsPostponed.Add(uint64(full))
	}
}

// confirm takes d off what waits for member: it holds it.
func (ds *documents) confirm(network cert.NetworkKey, member key.Key, d *cert.Document) {
	ds.out.confirm(network, member, d)
}

// lacks returns the summary of what the rendezvous holds of network, and
// what a member whose summary is theirs may lack; when nothing, nothing
// waits for it any more.
func (ds *documents) lacks(network cert.NetworkKey, member key.Key, theirs cert.Summary) (cert.Summary, []*cert.Document) {
	sum, docs := ds.store.summaryFor(network, theirs)
	if len(docs) == 0 {
		ds.out.settle(network, member)
	}
	return sum, docs
}

// sendOnce queues docs for member, to be sent once.
func (ds *documents) sendOnce(network cert.NetworkKey, member key.Key, docs []*cert.Document, now time.Time) {
	if full := ds.out.sendOnce(network, member, docs, now); full > 0 {
		ds.stats.DocumentsPostponed.Add(uint64(full))
	}
}

// prune forgets what expired of the documents, and the networks without
// members past their time (docStore.prune).
func (ds *documents) prune(now time.Time) {
	if n := ds.store.prune(now); n > 0 {
		ds.dirty.Store(true)
		ds.stats.DocumentNetworksPruned.Add(uint64(n))
		ds.log.Info("documents of networks without members forgotten", "networks", n)
	}
}
