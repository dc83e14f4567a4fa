package rendezvous

import (
	"bytes"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// A network at its budget (docstore.go): what may be asked of it on every
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
