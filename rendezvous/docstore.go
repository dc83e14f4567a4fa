package rendezvous

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// The document store: every network's documents, each network within a
// budget of its own, so that no network — a stranger's thousand included —
// can take another's room. It has its own lock, a leaf: nothing is called
// out to while it is held, so the server may call in holding s.mu.
//
// Bounds (figures for SECURITY.md):
//   - a network holds at most docBase + docPerMember × its registered
//     members bytes of documents: 8 KiB for a network of one, about 2.5 MiB
//     for one of 10,000 (some 18,000 single-key revocations);
//   - a network with no member registered keeps its documents for
//     orphanTTL (24 h, across restarts), and all such networks together at
//     most maxOrphanBytes (64 MiB; the longest orphaned go first);
//   - so at DefaultMaxPeers (100,000 registrations, each its own network)
//     the store holds at most 100,000 × (8 KiB + 256 B) + 64 MiB ≈ 0.9 GB
//     of documents, whoever registers; a revocation past its network's
//     budget is still acted on (its keys, up to maxOverflow per network,
//     are refused) and sent to the members, only not kept.
//   - new documents per network: pubRate a second, burst pubBurst.
const (
	docBase        = 8 << 10
	docPerMember   = 256
	orphanTTL      = 24 * time.Hour
	maxOrphanBytes = 64 << 20
	maxOverflow    = 32
	// pubRate and pubBurst bound the new documents a network publishes:
	// an owner revoking a few members in a row is not slowed, one signing
	// policies in a loop gets one a second, each fanned out within the
	// network's output bound (outbox.go).
	pubRate  = 1.0
	pubBurst = 10.0
)

// Outcomes of docStore.take besides errors.
var (
	errNoRoom   = errors.New("documents: the network holds its most bytes here")
	errPubRate  = errors.New("documents: the network publishes faster than its rate")
	errNotFound = errors.New("documents: no such network")
)

type docStore struct {
	mu          sync.Mutex
	nets        map[cert.NetworkKey]*netDocs
	orphanBytes int // of networks with no member registered
}

// netDocs is one network's documents and what bounds them.
type netDocs struct {
	h    *cert.Holdings
	size int // bytes of the documents in h
	// orphaned is when the network's last member left; zero while it has
	// members.
	orphaned time.Time
	// overflow are keys revoked by revocations past the budget: refused,
	// though their documents are not kept.
	overflow map[key.Key]struct{}
	// tokens and at are the bucket of new documents (pubRate).
	tokens float64
	at     time.Time
}

func newDocStore() *docStore {
	return &docStore{nets: make(map[cert.NetworkKey]*netDocs)}
}

// budget is the bytes a network of members registered members may hold.
func budget(members int) int { return docBase + docPerMember*members }

// sizeOf is the bytes of h's documents.
func sizeOf(h *cert.Holdings) int {
	n := 0
	if p := h.Policy(); p != nil {
		n += len(p.Bytes())
	}
	for _, r := range h.Revocations() {
		n += len(r.Bytes())
	}
	return n
}

// take adds a verified document of a network with members registered
// members. It reports whether the document is new to the store; errNoRoom
// (a revocation over budget: its keys are refused all the same, so the
// caller acts on it and sends it on), errPubRate, or the holdings' error.
func (st *docStore) take(d *cert.Document, members int, now time.Time) (bool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.nets[d.Network]
	if n == nil {
		n = &netDocs{h: cert.NewHoldings(d.Network), tokens: pubBurst, at: now}
		if members == 0 {
			n.orphaned = now
		}
	}
	if st.holds(n, d) {
		return false, nil
	}
	// Charged for a new document only: a member replaying the network's
	// old documents spends nothing of its owner's rate.
	n.tokens = min(pubBurst, n.tokens+now.Sub(n.at).Seconds()*pubRate)
	n.at = now
	if n.tokens < 1 {
		st.remember(d.Network, n)
		return false, errPubRate
	}
	grow := len(d.Bytes())
	if p := n.h.Policy(); p != nil && d.Kind == cert.KindPolicy {
		grow -= len(p.Bytes())
	}
	if n.size+grow > budget(members) && grow > 0 {
		st.remember(d.Network, n)
		if d.Kind != cert.KindRevocation {
			return false, errNoRoom
		}
		n.tokens--
		added := false
		for _, k := range d.Revoked {
			if _, ok := n.overflow[k]; ok || n.h.Revoked(k) || len(n.overflow) >= maxOverflow {
				continue
			}
			if n.overflow == nil {
				n.overflow = make(map[key.Key]struct{})
			}
			n.overflow[k] = struct{}{}
			added = true
		}
		if added {
			return true, errNoRoom
		}
		return false, errNoRoom
	}
	added, err := n.h.Add(d)
	if !added {
		st.remember(d.Network, n)
		return false, err
	}
	n.tokens--
	before := n.size
	n.size = sizeOf(n.h)
	if !n.orphaned.IsZero() {
		st.orphanBytes += n.size - before
	}
	st.nets[d.Network] = n
	return true, nil
}

// remember keeps n (and its rate bucket) if it holds anything.
func (st *docStore) remember(nk cert.NetworkKey, n *netDocs) {
	if n.size > 0 || len(n.overflow) > 0 {
		st.nets[nk] = n
	}
}

// holds reports whether n holds d already.
func (st *docStore) holds(n *netDocs, d *cert.Document) bool {
	if d.Kind == cert.KindPolicy {
		p := n.h.Policy()
		return p != nil && p.Hash() == d.Hash()
	}
	hash := d.Hash()
	_, found := slices.BinarySearchFunc(n.h.Revocations(), hash, func(r *cert.Document, h [32]byte) int {
		rh := r.Hash()
		return bytes.Compare(rh[:], h[:])
	}) // Revocations are in hash order
	return found
}

// revoked reports whether network's documents revoke k.
func (st *docStore) revoked(network cert.NetworkKey, k key.Key) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.nets[network]
	if n == nil {
		return false
	}
	_, over := n.overflow[k]
	return over || n.h.Revoked(k)
}

// summaryFor returns the summary of network's documents and those a
// holder of theirs may lack.
func (st *docStore) summaryFor(network cert.NetworkKey, theirs cert.Summary) (cert.Summary, []*cert.Document) {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.nets[network]
	if n == nil {
		return cert.Summary{}, nil
	}
	return n.h.Summary(), n.h.For(theirs)
}

// adopt notes that network has a member registered again.
func (st *docStore) adopt(network cert.NetworkKey) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.nets[network]; n != nil && !n.orphaned.IsZero() {
		n.orphaned = time.Time{}
		st.orphanBytes -= n.size
	}
}

// orphan notes that network's last registered member left at now.
func (st *docStore) orphan(network cert.NetworkKey, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.nets[network]; n != nil && n.orphaned.IsZero() {
		n.orphaned = now
		st.orphanBytes += n.size
	}
}

// prune forgets the networks orphaned for orphanTTL, and the longest
// orphaned while all orphans hold more than maxOrphanBytes. It returns how
// many networks it forgot.
func (st *docStore) prune(now time.Time) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	gone := 0
	for nk, n := range st.nets {
		if !n.orphaned.IsZero() && now.Sub(n.orphaned) >= orphanTTL {
			st.drop(nk, n)
			gone++
		}
	}
	for st.orphanBytes > maxOrphanBytes {
		var (
			oldest   *netDocs
			oldestNK cert.NetworkKey
		)
		for nk, n := range st.nets {
			if !n.orphaned.IsZero() && (oldest == nil || n.orphaned.Before(oldest.orphaned)) {
				oldest, oldestNK = n, nk
			}
		}
		if oldest == nil {
			break
		}
		st.drop(oldestNK, oldest)
		gone++
	}
	return gone
}

func (st *docStore) drop(nk cert.NetworkKey, n *netDocs) {
	if !n.orphaned.IsZero() {
		st.orphanBytes -= n.size
	}
	delete(st.nets, nk)
}

// stored is one network's documents as the state file keeps them.
type stored struct {
	docs     []*cert.Document
	orphaned time.Time
}

// each calls f with every network's documents (f must not call in).
func (st *docStore) each(f func(nk cert.NetworkKey, s stored)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for nk, n := range st.nets {
		s := stored{orphaned: n.orphaned}
		if p := n.h.Policy(); p != nil {
			s.docs = append(s.docs, p)
		}
		s.docs = append(s.docs, n.h.Revocations()...)
		f(nk, s)
	}
}

// restore takes documents from the state file, verified again, beyond any
// rate; a network restored without members is orphaned since orphaned
// (now if the file did not say).
func (st *docStore) restore(d *cert.Document, orphaned time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.nets[d.Network]
	if n == nil {
		n = &netDocs{h: cert.NewHoldings(d.Network), tokens: pubBurst, at: orphaned, orphaned: orphaned}
		st.nets[d.Network] = n
	}
	before := n.size
	if added, _ := n.h.Add(d); added {
		n.size = sizeOf(n.h)
		if !n.orphaned.IsZero() {
			st.orphanBytes += n.size - before
		}
	}
}

// stats reports the networks held and their bytes.
func (st *docStore) stats() (networks, bytes int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, n := range st.nets {
		bytes += n.size
	}
	return len(st.nets), bytes
}
