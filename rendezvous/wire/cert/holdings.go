package cert

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Holdings is what a member, or the rendezvous, holds of one network's
// documents: the newest policy and the revocations in force. Policies
// replace each other by seq (a tie goes to the higher hash, so that every
// holder picks the same). Revocations add up with no cap: a revocation is
// kept while it names a live entry (a key, or a certificate not yet
// expired) that no revocation ranked above it (higher seq, a tie to the
// higher hash) names; others are covered and dropped. So a later
// revocation never undoes an earlier one, a cumulative one replaces those
// it covers, and two holders of the same documents keep the same ones
// and show the same summary, whatever order they came in. Not safe for
// concurrent use: it has one owner (the control loop, or the rendezvous
// under its lock).
type Holdings struct {
	network     NetworkKey
	policy      *Document
	revocations []*Document // kept, sorted by hash
	// revoked and retired are the entries the kept revocations name, each
	// with the highest-ranked revocation naming it.
	revoked map[key.Key]*Document
	retired map[[32]byte]*Document
	now     time.Time // of the last Prune: certificates expired by then name nothing
	size    int
	summary *Summary // cached; nil after a change
}

// ErrOlderPolicy: a policy of a lower seq than the one held (Add).
var ErrOlderPolicy = errors.New("policy: older than the one held (a lower seq)")

// NewHoldings returns empty holdings of network.
func NewHoldings(network NetworkKey) *Holdings {
	return &Holdings{network: network, revoked: map[key.Key]*Document{}, retired: map[[32]byte]*Document{}}
}

// Network is the network whose documents these are.
func (h *Holdings) Network() NetworkKey { return h.network }

// Add takes a parsed document: it reports whether it changed anything,
// and why not when that is an error (another network's, an older
// policy). A document held already, or a revocation covered by those
// held, is no error and no change.
func (h *Holdings) Add(d *Document) (bool, error) {
	if d.Network != h.network {
		return false, &Error{Reason: OtherNetwork, What: d.KindName(), Detail: "signed by network " + d.Network.String()}
	}
	if d.Kind == KindPolicy {
		if h.policy != nil {
			if bytes.Equal(h.policy.raw, d.raw) {
				return false, nil
			}
			if rank(d, h.policy) < 0 {
				return false, ErrOlderPolicy
			}
			h.size -= len(h.policy.raw)
		}
		h.policy = d
		h.size += len(d.raw)
		h.summary = nil
		return true, nil
	}
	if _, held := slices.BinarySearchFunc(h.revocations, d.hash, byHash); held || h.covered(d) {
		return false, nil
	}
	h.insert(d)
	return true, nil
}

// insert keeps revocation d, which names a live entry no revocation
// ranked above it names, and drops those it now covers: only a
// revocation that was the highest-ranked to name one of d's entries can
// be.
func (h *Holdings) insert(d *Document) {
	var was []*Document
	for _, k := range d.Revoked {
		if by := h.revoked[k]; by == nil || rank(by, d) < 0 {
			was = append(was, by)
			h.revoked[k] = d
		}
	}
	for _, c := range d.Retired {
		if by := h.retired[c.Fingerprint]; h.live(c) && (by == nil || rank(by, d) < 0) {
			was = append(was, by)
			h.retired[c.Fingerprint] = d
		}
	}
	h.keep(d)
	for _, x := range was {
		if x != nil && h.covered(x) {
			h.drop(x)
		}
	}
	h.summary = nil
}

func byHash(a *Document, b [32]byte) int { return bytes.Compare(a.hash[:], b[:]) }

func (h *Holdings) keep(d *Document) {
	i, _ := slices.BinarySearchFunc(h.revocations, d.hash, byHash)
	h.revocations = slices.Insert(h.revocations, i, d)
	h.size += len(d.raw)
}

func (h *Holdings) drop(d *Document) {
	if i, found := slices.BinarySearchFunc(h.revocations, d.hash, byHash); found {
		h.revocations = slices.Delete(h.revocations, i, i+1)
		h.size -= len(d.raw)
	}
}

// covered reports whether every live entry of revocation d is named by a
// revocation held that ranks above it.
func (h *Holdings) covered(d *Document) bool {
	above := func(by *Document) bool { return by != nil && rank(by, d) > 0 }
	for _, k := range d.Revoked {
		if !above(h.revoked[k]) {
			return false
		}
	}
	for _, c := range d.Retired {
		if h.live(c) && !above(h.retired[c.Fingerprint]) {
			return false
		}
	}
	return true
}

func (h *Holdings) live(c RetiredCert) bool { return h.now.Before(c.NotAfter) }

// recompute keeps, of revs, those that name a live entry no revocation
// ranked above them names.
func (h *Holdings) recompute(revs []*Document) {
	slices.SortFunc(revs, func(a, b *Document) int { return rank(b, a) })
	h.revoked = map[key.Key]*Document{}
	h.retired = map[[32]byte]*Document{}
	h.revocations = nil
	h.size = 0
	if h.policy != nil {
		h.size = len(h.policy.raw)
	}
	for _, d := range revs {
		if _, held := slices.BinarySearchFunc(h.revocations, d.hash, byHash); held || h.covered(d) {
			continue
		}
		for _, k := range d.Revoked {
			if h.revoked[k] == nil {
				h.revoked[k] = d
			}
		}
		for _, c := range d.Retired {
			if h.live(c) && h.retired[c.Fingerprint] == nil {
				h.retired[c.Fingerprint] = d
			}
		}
		h.keep(d)
	}
	h.summary = nil
}

// rank orders documents of one kind: by seq, a tie by hash.
func rank(a, b *Document) int {
	if a.Seq != b.Seq {
		return cmp.Compare(a.Seq, b.Seq)
	}
	return bytes.Compare(a.hash[:], b.hash[:])
}

// Prune drops what certificates expired by now name, and the revocations
// that then name nothing live. It reports whether anything changed.
func (h *Holdings) Prune(now time.Time) bool {
	h.now = now
	expired := false
	for _, d := range h.revocations {
		for _, c := range d.Retired {
			if !h.live(c) && h.retired[c.Fingerprint] == d {
				expired = true
			}
		}
	}
	if !expired {
		return false
	}
	before := h.Summary()
	h.recompute(slices.Clone(h.revocations))
	return h.Summary() != before
}

// Policy is the newest policy held; nil: none, members reach each other
// fully.
func (h *Holdings) Policy() *Document { return h.policy }

// Revocations are the revocations kept, in hash order.
func (h *Holdings) Revocations() []*Document { return h.revocations }

// Revoked reports whether a revocation held names k.
func (h *Holdings) Revoked(k key.Key) bool { return h.revoked[k] != nil }

// RevokedKeys counts the keys revoked.
func (h *Holdings) RevokedKeys() int { return len(h.revoked) }

// RetiredCerts counts the certificates retired and not yet expired.
func (h *Holdings) RetiredCerts() int { return len(h.retired) }

// Refuses says why c may not be a member: its key revoked, or c itself
// retired; nil when neither.
func (h *Holdings) Refuses(c *Cert) error {
	if h.Revoked(c.Member) {
		return &Error{Reason: Revoked, Detail: "the network key revoked " + c.Member.String()}
	}
	if h.retired[c.FingerprintBytes()] != nil {
		return &Error{Reason: Retired, Detail: "the network key retired certificate " + c.Fingerprint()}
	}
	return nil
}

// Size is the bytes of every document held; Len counts them.
func (h *Holdings) Size() int { return h.size }

// Len counts the documents held.
func (h *Holdings) Len() int {
	if h.policy != nil {
		return len(h.revocations) + 1
	}
	return len(h.revocations)
}

// Summary names holdings in a few bytes, for two holders to find out
// whether one lacks what the other has: the policy's seq, and a digest of
// the policy and every revocation (zero: nothing held).
type Summary struct {
	PolicySeq uint64
	Digest    [16]byte
}

// SummaryLen is a Summary's length on the wire.
const SummaryLen = 8 + 16

// Summary returns the holdings' summary.
func (h *Holdings) Summary() Summary {
	if h.summary == nil {
		s := h.digest()
		h.summary = &s
	}
	return *h.summary
}

func (h *Holdings) digest() Summary {
	var s Summary
	if h.policy == nil && len(h.revocations) == 0 {
		return s
	}
	sum := sha256.New()
	if h.policy != nil {
		s.PolicySeq = h.policy.Seq
		sum.Write(h.policy.hash[:])
	} else {
		sum.Write(make([]byte, 32))
	}
	for _, r := range h.revocations {
		sum.Write(r.hash[:])
	}
	copy(s.Digest[:], sum.Sum(nil))
	return s
}

// For returns what a holder of theirs may lack: nothing when the
// summaries match; else the policy unless theirs is newer, and every
// revocation (the other side keeps what it holds already).
func (h *Holdings) For(theirs Summary) []*Document {
	if h.Summary() == theirs {
		return nil
	}
	var out []*Document
	if h.policy != nil && h.policy.Seq >= theirs.PolicySeq {
		out = append(out, h.policy)
	}
	return append(out, h.revocations...)
}

// AppendSummary writes s as SummaryLen bytes.
func AppendSummary(b []byte, s Summary) []byte {
	return append(binary.BigEndian.AppendUint64(b, s.PolicySeq), s.Digest[:]...)
}

// ParseSummary reads SummaryLen bytes.
func ParseSummary(b []byte) (Summary, bool) {
	if len(b) != SummaryLen {
		return Summary{}, false
	}
	s := Summary{PolicySeq: binary.BigEndian.Uint64(b)}
	copy(s.Digest[:], b[8:])
	return s, true
}
