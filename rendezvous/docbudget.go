package rendezvous

import (
	"bytes"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Taking a network's documents (docstore.go) within its budget, and its
// publication rate, which bounds the fan-out only: a list of revocations
// handed in as hundreds of documents is all kept.
//
// A network at its budget: what may be asked of it on every
// message a member sends must cost a lookup, not a rebuild of its
// holdings (about 15 ms at 18,000 revocations) under the server's lock.
// So a revocation covered by what is held, or by the overflow, is
// answered from an index of who names each entry; a document found not
// to fit is remembered (nofitMemory per network) until the holdings or
// the budget change.
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
		n = newNetDocs(d.Network, now)
		n.count, n.countAt = members, now
		if members == 0 {
			n.orphaned = now
		}
	}
	if st.holds(n, d) {
		return false, false, nil
	}
	p := n.h.Policy()
	if p != nil && d.Kind == cert.KindPolicy && ranks(p.Seq, p.Hash(), d) > 0 {
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
	n.named = nil
	n.nofit = nil
	st.resize(n)
	st.nets[n.h.Network()] = n
}

// spend takes a token of n's publication rate if there is one: whether
// a new document may be fanned out now.
func (n *netDocs) spend(now time.Time) bool {
	n.tokens = min(pubBurst, n.tokens+now.Sub(n.at).Seconds()*pubRate)
	n.at = now
	if n.tokens < 1 {
		return false
	}
	n.tokens--
	return true
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

// rank is a held revocation's place among those naming an entry.
type rank struct {
	seq  uint64
	hash [32]byte
}

// ranks compares a document of seq and hash with d: as cert ranks them,
// by seq, a tie by hash.
func ranks(seq uint64, hash [32]byte, d *cert.Document) int {
	switch {
	case seq > d.Seq:
		return 1
	case seq < d.Seq:
		return -1
	}
	h := d.Hash()
	return bytes.Compare(hash[:], h[:])
}

// entryIndex is, for each entry the held revocations name, the highest
// rank naming it.
type entryIndex struct {
	keys  map[key.Key]rank
	certs map[[32]byte]rank
}

// index is n's entryIndex, built again after a change of the holdings.
func (n *netDocs) index(now time.Time) *entryIndex {
	if n.named != nil {
		return n.named
	}
	idx := &entryIndex{keys: map[key.Key]rank{}, certs: map[[32]byte]rank{}}
	higher := func(r rank, was rank, held bool) bool {
		return !held || r.seq > was.seq || r.seq == was.seq && bytes.Compare(r.hash[:], was.hash[:]) > 0
	}
	for _, d := range n.h.Revocations() {
		r := rank{d.Seq, d.Hash()}
		for _, k := range d.Revoked {
			if was, held := idx.keys[k]; higher(r, was, held) {
				idx.keys[k] = r
			}
		}
		for _, c := range d.Retired {
			if !now.Before(c.NotAfter) {
				continue
			}
			if was, held := idx.certs[c.Fingerprint]; higher(r, was, held) {
				idx.certs[c.Fingerprint] = r
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
		if r, held := idx.keys[k]; !held || ranks(r.seq, r.hash, d) <= 0 {
			return false
		}
	}
	for _, c := range d.Retired {
		if _, over := n.overflowCerts[c.Fingerprint]; over || !now.Before(c.NotAfter) {
			continue
		}
		if r, held := idx.certs[c.Fingerprint]; !held || ranks(r.seq, r.hash, d) <= 0 {
			return false
		}
	}
	return true
}

// noFit reports whether d was found not to fit n's holdings within limit
// since they last changed.
func (n *netDocs) noFit(d *cert.Document, limit int) bool {
	if n.nofitLimit != limit {
		return false
	}
	h := d.Hash()
	for _, x := range n.nofit {
		if x == h {
			return true
		}
	}
	return false
}

// markNoFit remembers that d does not fit within limit, the oldest of
// nofitMemory forgotten.
func (n *netDocs) markNoFit(d *cert.Document, limit int) {
	if n.nofitLimit != limit {
		n.nofit, n.nofitLimit = nil, limit
	}
	if len(n.nofit) >= nofitMemory {
		n.nofit = n.nofit[1:]
	}
	n.nofit = append(n.nofit, d.Hash())
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
