package rendezvous

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/rendezvous/wire/tokenbucket"
)

// The document store: what the rendezvous holds of each network besides
// its registrations — the documents the network key signed, and the
// newest certificate seen of each member key (cert.Newest) — each network
// within a budget of its own, so that no network, a stranger's thousand
// included, can take another's room. It has its own lock, a leaf: nothing
// is called out to while it is held, so the registry may call in
// holding its own.
//
// Bounds (figures for SECURITY.md):
//   - a network holds at most docBase + docPerMember × its registered
//     members bytes of documents: 8 KiB for a network of one, about 2.5 MiB
//     for one of 10,000 (some 18,000 single-key revocations);
//   - a network with no member registered keeps its documents for
//     orphanTTL (24 h, across restarts), and all such networks together at
//     most maxOrphanBytes (64 MiB; those whose bytes cost most per
//     member-hour they earned here go first);
//   - so at DefaultMaxPeers (100,000 registrations, each its own network)
//     the store holds at most 100,000 × (8 KiB + 256 B) + 64 MiB ≈ 0.9 GB
//     of documents, whoever registers; a revocation past its network's
//     budget is still acted on (its entries, up to maxOverflow — budget/40
//     — per network, are refused) and sent to the members, only not kept;
//   - a new document within the budget is always kept; fan-outs of new
//     documents per network: pubRate a second, burst pubBurst (one past
//     the rate reaches the members by their registrations' summaries);
//   - newest certificates per network: newestPerMember × (its registered
//     members + 1) keys, each remembered until every certificate seen of
//     it has expired, or forgotten with the network's documents (an
//     orphan's count among maxOrphanBytes, at newestEntry bytes each): at
//     most 400,000 at DefaultMaxPeers, about 200 MB.
const (
	docBase        = 8 << 10
	docPerMember   = 256
	orphanTTL      = 24 * time.Hour
	maxOrphanBytes = 64 << 20
	// newestPerMember bounds a network's cert.Newest: a member re-signed
	// is seen again at its next registration, so two per member leave
	// room for keys that left.
	newestPerMember = 2
	newestEntry     = 512 // about what one costs in memory
	// pruneEvery is how often the holdings and Newest drop what expired.
	pruneEvery = time.Minute
	// pubRate and pubBurst bound the fan-outs of a network's new
	// documents: an owner revoking a few members in a row is not slowed,
	// one signing policies in a loop gets one fanned out a second (within
	// the network's output bound, the outbox); the others are kept and
	// reach the members by their registrations' summaries.
	pubRate  = 1.0
	pubBurst = 10.0
)

// Outcomes of docStore.take besides errors.
var (
	errNoRoom   = errors.New("documents: the network holds its most bytes here")
	errNotFound = errors.New("documents: no such network")
)

type docStore struct {
	mu          sync.Mutex
	nets        map[cert.NetworkKey]*netDocs
	orphanBytes int       // of networks with no member registered
	pruned      time.Time // when expired entries were last dropped
	rebuilds    int       // withRoom runs, for tests
	maxOrphans  int       // maxOrphanBytes; less in tests
}

// netDocs is one network's documents and what bounds them.
type netDocs struct {
	h      *cert.Holdings
	size   int // bytes of the documents in h
	weight int // size and the newest certificates' (resize)
	// orphaned is when the network's last member left; zero while it has
	// members.
	orphaned time.Time
	// overflow are keys revoked and certificates retired (by fingerprint,
	// until their NotAfter) by revocations past the budget: refused,
	// though their documents are not kept; at most maxOverflow(budget)
	// entries. Keys stay; certificates go when they expire.
	overflow      map[key.Key]struct{}
	overflowCerts map[[32]byte]time.Time
	// named indexes the held revocations' entries, nofit the documents
	// found not to fit within nofitLimit; both forgotten when the
	// holdings change.
	named      *entryIndex
	nofit      [][32]byte // oldest first
	nofitSet   map[[32]byte]struct{}
	nofitLimit int
	// memberSecs are the member-seconds the network earned here (its
	// registered members, count since countAt, times the time): what
	// orphans are evicted by (prune).
	memberSecs float64
	count      int
	countAt    time.Time
	newest     *cert.Newest
	// pub is the bucket of new documents' fan-outs (pubRate).
	pub tokenbucket.Bucket
}

func newDocStore() *docStore {
	return &docStore{nets: make(map[cert.NetworkKey]*netDocs), maxOrphans: maxOrphanBytes}
}

// budget is the bytes a network of members registered members may hold.
func budget(members int) int { return docBase + docPerMember*members }

// newNetDocs makes the entry of network nk, which has members registered.
func newNetDocs(nk cert.NetworkKey, members int, now time.Time) *netDocs {
	return &netDocs{h: cert.NewHoldings(nk), newest: cert.NewNewest(nk), pub: tokenbucket.Full(pubBurst, now), count: members, countAt: now}
}

// held reports whether n holds anything worth its entry.
func (n *netDocs) held() bool {
	return n.size > 0 || len(n.overflow)+len(n.overflowCerts) > 0 || n.newest.Len() > 0
}

// resize takes n's new size into the store's count of orphans' bytes:
// its documents' and about newestEntry bytes per newest certificate.
func (st *docStore) resize(n *netDocs) {
	before := n.weight
	n.size = n.h.Size()
	n.weight = n.size + newestEntry*n.newest.Len() + overflowEntry*(len(n.overflow)+len(n.overflowCerts))
	if !n.orphaned.IsZero() {
		st.orphanBytes += n.weight - before
	}
}

// remember keeps n (and its rate bucket) if it holds anything.
func (st *docStore) remember(nk cert.NetworkKey, n *netDocs) {
	if n.held() {
		st.nets[nk] = n
	}
}

// holds reports whether n holds d already.
func (st *docStore) holds(n *netDocs, d *cert.Document) bool {
	if d.Kind == cert.KindPolicy {
		p := n.h.Policy()
		return p != nil && p.Hash() == d.Hash()
	}
	_, found := slices.BinarySearchFunc(n.h.Revocations(), d.Hash(), func(r *cert.Document, h [32]byte) int {
		rh := r.Hash()
		return bytes.Compare(rh[:], h[:])
	}) // Revocations are in hash order
	return found
}

// known returns the held document whose encoding raw is, nil if none: a
// member handing back what it took costs a hash, not a signature check.
func (st *docStore) known(raw []byte) *cert.Document {
	var nk cert.NetworkKey
	if len(raw) < 2+len(nk) {
		return nil
	}
	copy(nk[:], raw[2:]) // after kind and version
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.nets[nk]
	if n == nil {
		return nil
	}
	if p := n.h.Policy(); p != nil && bytes.Equal(p.Bytes(), raw) {
		return p
	}
	revs := n.h.Revocations()
	i, found := slices.BinarySearchFunc(revs, sha256.Sum256(raw), func(r *cert.Document, h [32]byte) int {
		rh := r.Hash()
		return bytes.Compare(rh[:], h[:])
	})
	if found {
		return revs[i]
	}
	return nil
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

// refuses says why c may not be a member of its network: its key revoked,
// c retired (cert.Revoked, cert.Retired), or a newer certificate of its
// key seen (cert.Superseded); nil when none, c then remembered as the
// newest of its key if it is, within the network's bound of members
// registered members; newer reports whether it was (the state file is to
// be written).
func (st *docStore) refuses(c *cert.Cert, members int, now time.Time) (newer bool, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.nets[c.Network]
	if n == nil {
		n = newNetDocs(c.Network, members, now)
	}
	if err := n.refuses(c, now); err != nil {
		return false, err
	}
	before := n.newest.Of(c.Member)
	if before == nil && n.newest.Len() >= newestPerMember*(members+1) {
		return false, nil // no room to remember it: it is taken, not remembered
	}
	if err := n.newest.See(c, now); err != nil {
		return false, err
	}
	st.resize(n)
	st.nets[c.Network] = n
	return n.newest.Of(c.Member) != before, nil
}

// refuses is docStore.refuses without Newest. Callers hold st.mu.
func (n *netDocs) refuses(c *cert.Cert, now time.Time) error {
	if err := n.h.Refuses(c); err != nil {
		return err
	}
	if _, ok := n.overflow[c.Member]; ok {
		return &cert.Error{Reason: cert.Revoked, Detail: "the network key revoked " + c.Member.String()}
	}
	if until, ok := n.overflowCerts[c.FingerprintBytes()]; ok && now.Before(until) {
		return &cert.Error{Reason: cert.Retired, Detail: "the network key retired certificate " + c.Fingerprint()}
	}
	return nil
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

// members notes that network has members registered since now, for
// the member-seconds its documents earn (prune).
func (st *docStore) members(network cert.NetworkKey, members int, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.nets[network]; n != nil {
		n.earn(now)
		n.count = members
	}
}

// earn adds the member-seconds since countAt. Callers hold st.mu.
func (n *netDocs) earn(now time.Time) {
	if n.count > 0 && now.After(n.countAt) {
		n.memberSecs += float64(n.count) * now.Sub(n.countAt).Seconds()
	}
	n.countAt = now
}

// cost is what an orphan's bytes cost per member-hour its network
// earned here (one member-minute at least): the dearest goes first.
func (n *netDocs) cost() float64 {
	return float64(n.weight) / max(n.memberSecs/3600, 1.0/60)
}

// adopt notes that network has a member registered again.
func (st *docStore) adopt(network cert.NetworkKey) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.nets[network]; n != nil && !n.orphaned.IsZero() {
		n.orphaned = time.Time{}
		st.orphanBytes -= n.weight
	}
}

// orphan notes that network's last registered member left at now.
func (st *docStore) orphan(network cert.NetworkKey, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.nets[network]; n != nil && n.orphaned.IsZero() {
		n.orphaned = now
		st.orphanBytes += n.weight
	}
}

// prune forgets the networks orphaned for orphanTTL, and while all
// orphans hold more than maxOrphanBytes, the one whose bytes cost most
// per member-hour it earned here (cost): not the one orphaned longest,
// which a stranger's thousands of one-member networks, made and left,
// would push out — a real network whose members are all offline
// overnight. To outlast it an orphan must have earned as many
// member-hours per byte: registrations held for hours, out of the
// rendezvous's MaxPeers. It returns how
// many networks it forgot.
func (st *docStore) prune(now time.Time) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	if now.Sub(st.pruned) >= pruneEvery {
		st.pruned = now
		for _, n := range st.nets {
			if n.h.Prune(now) {
				n.named, n.nofit, n.nofitSet = nil, nil, nil
			}
			n.newest.Prune(now)
			for f, until := range n.overflowCerts {
				if !now.Before(until) {
					delete(n.overflowCerts, f)
				}
			}
			st.resize(n)
		}
	}
	gone := 0
	for nk, n := range st.nets {
		if !n.orphaned.IsZero() && now.Sub(n.orphaned) >= orphanTTL || !n.held() {
			st.drop(nk, n)
			gone++
		}
	}
	for st.orphanBytes > st.maxOrphans {
		var (
			worst   *netDocs
			worstNK cert.NetworkKey
		)
		for nk, n := range st.nets {
			if n.orphaned.IsZero() {
				continue
			}
			if worst == nil || n.cost() > worst.cost() || n.cost() == worst.cost() && n.orphaned.Before(worst.orphaned) {
				worst, worstNK = n, nk
			}
		}
		if worst == nil {
			break
		}
		st.drop(worstNK, worst)
		gone++
	}
	return gone
}

func (st *docStore) drop(nk cert.NetworkKey, n *netDocs) {
	if !n.orphaned.IsZero() {
		st.orphanBytes -= n.weight
	}
	delete(st.nets, nk)
}

// stored is one network's documents as the state file keeps them.
type stored struct {
	docs       []*cert.Document
	orphaned   time.Time
	newest     []byte // cert.Newest.AppendText
	memberSecs float64
}

// each calls f with every network's documents (f must not call in).
func (st *docStore) each(f func(nk cert.NetworkKey, s stored)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for nk, n := range st.nets {
		s := stored{orphaned: n.orphaned, newest: n.newest.AppendText(nil), memberSecs: n.memberSecs}
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
	n := st.restored(d.Network, orphaned)
	if added, _ := n.h.Add(d); added {
		n.named, n.nofit, n.nofitSet = nil, nil, nil
		st.resize(n)
	}
}

// restoreNewest takes a network's newest certificates from the state
// file; cert.Newest.LoadText verifies each again.
func (st *docStore) restoreNewest(nk cert.NetworkKey, text string, orphaned, now time.Time) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.restored(nk, orphaned)
	err := n.newest.LoadText(text, now)
	st.resize(n)
	return err
}

// restoreEarned takes a network's member-seconds from the state file
// (any number: they order evictions only).
func (st *docStore) restoreEarned(nk cert.NetworkKey, secs float64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.nets[nk]; n != nil && secs > 0 && secs < 1e15 {
		n.memberSecs = max(n.memberSecs, secs)
	}
}

// restored is nk's entry, made if need be. Callers hold st.mu.
func (st *docStore) restored(nk cert.NetworkKey, orphaned time.Time) *netDocs {
	n := st.nets[nk]
	if n == nil {
		n = newNetDocs(nk, 0, orphaned)
		n.orphaned = orphaned
		st.nets[nk] = n
	}
	return n
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
