package cert

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Holdings is what a member, or the rendezvous, holds of one network's
// documents: the newest policy and every revocation. Policies replace each
// other by seq (a tie goes to the higher hash, so that every holder picks
// the same); revocations add up. Not safe for concurrent use: it has one
// owner (the control loop, or the rendezvous under its lock).
type Holdings struct {
	network     NetworkKey
	policy      *Document
	revocations []*Document // sorted by hash
	revoked     map[key.Key]struct{}
}

// MaxRevocations bounds the revocations one network holds (MaxRevoked
// keys each): past it, new ones are refused until expired members'
// revocations are pruned by the network's owner signing fewer, larger ones.
const MaxRevocations = 64

// Errors of Add.
var (
	ErrOlderPolicy = errors.New("policy: older than the one held (a lower seq)")
	ErrFull        = errors.New("revocation: the network holds its most revocations")
)

// NewHoldings returns empty holdings of network.
func NewHoldings(network NetworkKey) *Holdings {
	return &Holdings{network: network, revoked: map[key.Key]struct{}{}}
}

// Network is the network whose documents these are.
func (h *Holdings) Network() NetworkKey { return h.network }

// Add takes a parsed document: it reports whether it changed anything,
// and why not when that is an error (another network's, an older policy,
// too many revocations). A document held already is no error.
func (h *Holdings) Add(d *Document) (bool, error) {
	if d.Network != h.network {
		return false, &Error{Reason: OtherNetwork, What: d.KindName(), Detail: "signed by network " + d.Network.String()}
	}
	hash := d.Hash()
	if d.Kind == KindPolicy {
		if h.policy != nil {
			if bytes.Equal(h.policy.raw, d.raw) {
				return false, nil
			}
			old := h.policy.Hash()
			if d.Seq < h.policy.Seq || d.Seq == h.policy.Seq && bytes.Compare(hash[:], old[:]) < 0 {
				return false, ErrOlderPolicy
			}
		}
		h.policy = d
		return true, nil
	}
	i, found := slices.BinarySearchFunc(h.revocations, hash, func(r *Document, h [32]byte) int {
		rh := r.Hash()
		return bytes.Compare(rh[:], h[:])
	})
	if found {
		return false, nil
	}
	if len(h.revocations) >= MaxRevocations {
		return false, ErrFull
	}
	h.revocations = slices.Insert(h.revocations, i, d)
	for _, k := range d.Revoked {
		h.revoked[k] = struct{}{}
	}
	return true, nil
}

// Policy is the newest policy held; nil: none, members reach each other
// fully.
func (h *Holdings) Policy() *Document { return h.policy }

// Revocations are the revocations held, in hash order.
func (h *Holdings) Revocations() []*Document { return h.revocations }

// Revoked reports whether a revocation held names k.
func (h *Holdings) Revoked(k key.Key) bool {
	_, ok := h.revoked[k]
	return ok
}

// RevokedKeys counts the keys revoked.
func (h *Holdings) RevokedKeys() int { return len(h.revoked) }

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
	var s Summary
	if h.policy == nil && len(h.revocations) == 0 {
		return s
	}
	sum := sha256.New()
	if h.policy != nil {
		s.PolicySeq = h.policy.Seq
		ph := h.policy.Hash()
		sum.Write(ph[:])
	} else {
		sum.Write(make([]byte, 32))
	}
	for _, r := range h.revocations {
		rh := r.Hash()
		sum.Write(rh[:])
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
