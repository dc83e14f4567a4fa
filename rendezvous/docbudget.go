package rendezvous

import (
	"bytes"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Taking a network's documents into the docStore within its budget, and
// its publication rate, which bounds the fan-out only: a list of
// revocations handed in as hundreds of documents is all kept.
//
// A network at its budget: what may be asked of it on every
// message a member sends must cost a lookup, not a rebuild of its
// holdings (about 15 ms at 18,000 revocations) under the registry's lock.
// So a revocation covered by what is held, or by the overflow, is
// answered from an index of who names each entry; a document found not
// to fit is remembered (nofitCap per network) until the holdings or the
// budget change.
const (
	nofitMemory = 64
	// overflowEntry is about what one entry of the overflow costs: a
	// network's overflow is bounded by its budget (maxOverflow).
	overflowEntry = 40
)

// take adds a verified document of a network with members registered
// members. A document new here and within the network's budget is always
// kept (and a revocation acted on): the publication rate (pubRate) bounds
// only the fan-out, and fan reports whether d may be fanned out now. A
// document kept past the rate is not lost: it reaches the members through
// their registrations' summaries (documentsFor) and the resends of its
// holders. What the store holds or covers already costs nothing (no
// token, no room, no rebuild). Past the budget, a revocation's entries
// not refused already are refused all the same (overflowed, errNoRoom,
// added when it named anything new, then fanned out whatever the rate:
// that happens at most maxOverflow times in a network's life); a policy
// is errNoRoom. Else the holdings' error (cert.ErrOlderPolicy).
func (st *docStore) take(d *cert.Document, members int, now time.Time) (added, fan bool, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.nets[d.Network]
	if n == nil {
		n = newNetDocs(d.Network, members, now)
		if members == 0 {
			n.orphaned = now
		}
	}
	if st.holds(n, d) {
		return false, false, nil
	}
	p := n.h.Policy()
	if p != nil && d.Kind == cert.KindPolicy && above(p, d) {
		return false, false, cert.ErrOlderPolicy
	}
	grow := len(d.Bytes())
	if p != nil && d.Kind == cert.KindPolicy {
		grow -= len(p.Bytes())
	}
	limit := budget(members)
	if n.size+grow <= limit || grow <= 0 {
		added, err := n.h.Add(d)
		if !added {
			st.remember(d.Network, n)
			return false, false, err
		}
		st.changed(n)
		return true, n.spend(now), nil
	}
	// Past the budget: the cheap answers first, a rebuild at most once
	// per document (nofit) and change of the holdings.
	if d.Kind == cert.KindRevocation && n.covers(d, now) {
		st.remember(d.Network, n)
		return false, false, nil
	}
	if !n.noFit(d, limit) {
		st.rebuilds++
		if h := withRoom(n, d, limit, now); h != nil {
			n.h = h
			st.changed(n)
			return true, n.spend(now), nil
		}
		n.markNoFit(d, limit)
	}
	st.remember(d.Network, n)
	if d.Kind != cert.KindRevocation {
		return false, false, errNoRoom
	}
	if st.overflowed(n, d, limit, now) {
		st.resize(n)
		st.nets[d.Network] = n
		n.spend(now)
		return true, true, errNoRoom
	}
	return false, false, errNoRoom
}

// changed takes a change of n's holdings: its size, and what was
// remembered of them, stale now. Callers hold st.mu.
func (st *docStore) changed(n *netDocs) {
	n.named, n.nofit, n.nofitSet = nil, nil, nil
	st.resize(n)
	st.nets[n.h.Network()] = n
}

// spend takes a token of n's publication rate if there is one: whether
// a new document may be fanned out now.
func (n *netDocs) spend(now time.Time) bool {
	return n.pub.Take(now, pubRate, pubBurst, 1)
}

// overflowed remembers what revocation d names that nothing here refuses
// yet, up to maxOverflow(limit) entries, and reports whether it named
// anything new. Callers hold st.mu.
func (st *docStore) overflowed(n *netDocs, d *cert.Document, limit int, now time.Time) bool {
	added := false
	room := func() bool { return len(n.overflow)+len(n.overflowCerts) < maxOverflow(limit) }
	idx := n.index(now)
	for _, k := range d.Revoked {
		if _, ok := n.overflow[k]; ok || n.h.Revoked(k) || !room() {
			continue
		}
		if n.overflow == nil {
			n.overflow = make(map[key.Key]struct{})
		}
		n.overflow[k] = struct{}{}
		added = true
	}
	for _, c := range d.Retired {
		_, over := n.overflowCerts[c.Fingerprint]
		_, held := idx.certs[c.Fingerprint]
		if over || held || !now.Before(c.NotAfter) || !room() {
			continue
		}
		if n.overflowCerts == nil {
			n.overflowCerts = make(map[[32]byte]time.Time)
		}
		n.overflowCerts[c.Fingerprint] = c.NotAfter
		added = true
	}
	return added
}

// maxOverflow bounds the entries a network's revocations past its budget
// may refuse (those of a network of one: 204).
func maxOverflow(limit int) int { return limit / overflowEntry }

// above reports whether a ranks above b as cert ranks documents of a
// kind: by seq, a tie by hash.
func above(a, b *cert.Document) bool {
	if a.Seq != b.Seq {
		return a.Seq > b.Seq
	}
	ha, hb := a.Hash(), b.Hash()
	return bytes.Compare(ha[:], hb[:]) > 0
}

// entryIndex is, for each entry the held revocations name, the
// highest-ranked naming it.
type entryIndex struct {
	keys  map[key.Key]*cert.Document
	certs map[[32]byte]*cert.Document
}

// index is n's entryIndex, built again after a change of the holdings.
func (n *netDocs) index(now time.Time) *entryIndex {
	if n.named != nil {
		return n.named
	}
	idx := &entryIndex{keys: map[key.Key]*cert.Document{}, certs: map[[32]byte]*cert.Document{}}
	higher := func(d, was *cert.Document) bool { return was == nil || above(d, was) }
	for _, d := range n.h.Revocations() {
		for _, k := range d.Revoked {
			if was := idx.keys[k]; higher(d, was) {
				idx.keys[k] = d
			}
		}
		for _, c := range d.Retired {
			if !now.Before(c.NotAfter) {
				continue
			}
			if was := idx.certs[c.Fingerprint]; higher(d, was) {
				idx.certs[c.Fingerprint] = d
			}
		}
	}
	n.named = idx
	return idx
}

// covers reports whether revocation d would change nothing here: each of
// its live entries is named by a held revocation ranked above it (as
// cert.Holdings would drop it), or refused by the overflow.
func (n *netDocs) covers(d *cert.Document, now time.Time) bool {
	idx := n.index(now)
	for _, k := range d.Revoked {
		if _, over := n.overflow[k]; over {
			continue
		}
		if by := idx.keys[k]; by == nil || !above(by, d) {
			return false
		}
	}
	for _, c := range d.Retired {
		if _, over := n.overflowCerts[c.Fingerprint]; over || !now.Before(c.NotAfter) {
			continue
		}
		if by := idx.certs[c.Fingerprint]; by == nil || !above(by, d) {
			return false
		}
	}
	return true
}

// nofitCap bounds the documents remembered as not fitting within limit:
// nofitMemory, or one per KiB of the budget (2,500 for a network of
// 10,000, which may be handed in hundreds of pieces of a list).
func nofitCap(limit int) int { return max(nofitMemory, limit>>10) }

// noFit reports whether d was found not to fit n's holdings within limit
// since they last changed.
func (n *netDocs) noFit(d *cert.Document, limit int) bool {
	if n.nofitLimit != limit {
		return false
	}
	_, ok := n.nofitSet[d.Hash()]
	return ok
}

// markNoFit remembers that d does not fit within limit, the oldest of
// nofitCap(limit) forgotten.
func (n *netDocs) markNoFit(d *cert.Document, limit int) {
	if n.nofitLimit != limit || n.nofitSet == nil {
		n.nofit, n.nofitSet, n.nofitLimit = nil, map[[32]byte]struct{}{}, limit
	}
	if len(n.nofit) >= nofitCap(limit) {
		delete(n.nofitSet, n.nofit[0])
		n.nofit = n.nofit[1:]
	}
	n.nofit = append(n.nofit, d.Hash())
	n.nofitSet[d.Hash()] = struct{}{}
}

// withRoom tries d on a copy of n's holdings, for a document that may
// fit only by covering others (a cumulative revocation): the copy if it
// fits within limit, else nil.
func withRoom(n *netDocs, d *cert.Document, limit int, now time.Time) *cert.Holdings {
	h := cert.NewHoldings(n.h.Network())
	h.Prune(now)
	if p := n.h.Policy(); p != nil {
		h.Add(p)
	}
	for _, r := range n.h.Revocations() {
		h.Add(r)
	}
	if added, _ := h.Add(d); !added || h.Size() > limit {
		return nil
	}
	return h
}
