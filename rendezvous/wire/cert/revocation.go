package cert

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// A revocation's body names what the network key takes back: member keys
// (every certificate of the key is void, whenever signed) and single
// certificates by fingerprint (a member re-signed without a group, or
// whose address moved, keeps its key but loses its old certificate).
// Version 2, integers big endian:
//
//	keys          2 bytes  count, then 32-byte Curve25519 keys, sorted,
//	                       none twice, none all zeros
//	certificates  2 bytes  count, then per certificate: its fingerprint
//	                       (32 bytes, SHA-256 of its encoding) and its not
//	                       after (8 bytes, Unix seconds), sorted by
//	                       fingerprint, none twice
//
// with at least one entry. The not-after lets a holder drop the entry
// once the certificate it names has expired: nothing it names can be
// valid then. Version 1 (1-byte count, 1..32 keys) is still read.
//
// Revocations add up: what any held revocation names stays void, and no
// later one undoes it. Holdings drops a revocation only when every entry
// it names is named by revocations ranked above it, so a network can
// revoke without end and its holders keep a bounded, shared set: a cumulative list (`punchtun network revoke --from`) replaces the
// smaller ones it covers.

const (
	revocationVersion = 2
	// revocationRoom is what a revocation's entries may take.
	revocationRoom = MaxDocument - docHeader - 2 - 2 - ed25519.SignatureSize
	retiredLen     = 32 + 8
	// MaxRevoked is the most keys one revocation names (with no
	// certificates); more go to further pieces (SignRevocations).
	MaxRevoked = revocationRoom / key.Len
)

// RetiredCert names one certificate a revocation retires.
type RetiredCert struct {
	Fingerprint [32]byte
	NotAfter    time.Time
}

// RetiredOf names c for a revocation.
func RetiredOf(c *Cert) RetiredCert {
	return RetiredCert{Fingerprint: c.FingerprintBytes(), NotAfter: c.NotAfter}
}

// FingerprintBytes is the SHA-256 of the certificate's encoding.
func (c *Cert) FingerprintBytes() [32]byte { return sha256.Sum256(c.raw) }

// SignRevocation returns one revocation of keys signed by priv.
func SignRevocation(priv NetworkPrivate, seq uint64, keys []key.Key) (*Document, error) {
	keys, _ = canonicalEntries(keys, nil)
	return sign(priv, &Document{Kind: KindRevocation, Seq: seq, Revoked: keys})
}

// SignRevocations returns the revocation of keys and certificates signed
// by priv, in as many pieces (documents of MaxDocument bytes at most, all
// of seq) as it takes.
func SignRevocations(priv NetworkPrivate, seq uint64, keys []key.Key, certs []RetiredCert) ([]*Document, error) {
	keys, certs = canonicalEntries(keys, certs)
	if len(keys)+len(certs) == 0 {
		return nil, errors.New("revocation: names no key and no certificate")
	}
	var out []*Document
	for len(keys)+len(certs) > 0 {
		d := &Document{Kind: KindRevocation, Seq: seq}
		room := revocationRoom
		for len(keys) > 0 && room >= key.Len {
			d.Revoked, keys, room = append(d.Revoked, keys[0]), keys[1:], room-key.Len
		}
		for len(certs) > 0 && room >= retiredLen {
			d.Retired, certs, room = append(d.Retired, certs[0]), certs[1:], room-retiredLen
		}
		s, err := sign(priv, d)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func canonicalEntries(keys []key.Key, certs []RetiredCert) ([]key.Key, []RetiredCert) {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, compareKey)
	certs = slices.Clone(certs)
	slices.SortFunc(certs, compareRetired)
	certs = slices.CompactFunc(certs, func(a, b RetiredCert) bool { return a.Fingerprint == b.Fingerprint })
	return slices.Compact(keys), certs
}

func compareRetired(a, b RetiredCert) int { return bytes.Compare(a.Fingerprint[:], b.Fingerprint[:]) }

// appendRevocation writes a revocation's entries in d's version.
func (d *Document) appendRevocation(b []byte) ([]byte, error) {
	n := len(d.Revoked) + len(d.Retired)
	if d.version == 1 {
		if len(d.Retired) > 0 || n < 1 || n > 32 {
			return nil, fmt.Errorf("revocation: version 1 names 1 to 32 keys and no certificates")
		}
		b = append(b, byte(n))
	} else {
		if n < 1 {
			return nil, errors.New("revocation: names no key and no certificate")
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(d.Revoked)))
	}
	for _, k := range d.Revoked {
		if k.IsZero() {
			return nil, errors.New("revocation: a key is all zeros")
		}
		b = append(b, k[:]...)
	}
	if d.version == 1 {
		return b, nil
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(d.Retired)))
	for _, c := range d.Retired {
		b = append(b, c.Fingerprint[:]...)
		b = binary.BigEndian.AppendUint64(b, uint64(c.NotAfter.Unix()))
	}
	return b, nil
}

// revocation reads a revocation's entries into d, checking the one
// encoding: sorted, none twice, at least one.
func (r *reader) revocation(d *Document) {
	var nkeys int
	if d.version == 1 {
		nkeys = r.count(1, 32, "keys")
	} else {
		nkeys = int(binary.BigEndian.Uint16(r.take(2)))
	}
	for range min(nkeys, MaxDocument/key.Len) {
		k := key.Key(r.take(key.Len))
		if r.err == nil && (k.IsZero() || len(d.Revoked) > 0 && compareKey(d.Revoked[len(d.Revoked)-1], k) >= 0) {
			r.err = errors.New("keys all zeros, out of order or twice (not the one encoding)")
		}
		d.Revoked = append(d.Revoked, k)
	}
	if d.version == 1 {
		return
	}
	ncerts := int(binary.BigEndian.Uint16(r.take(2)))
	for range min(ncerts, MaxDocument/retiredLen) {
		c := RetiredCert{Fingerprint: [32]byte(r.take(32)), NotAfter: r.time()}
		if r.err == nil && len(d.Retired) > 0 && compareRetired(d.Retired[len(d.Retired)-1], c) >= 0 {
			r.err = errors.New("certificates out of order or twice (not the one encoding)")
		}
		d.Retired = append(d.Retired, c)
	}
	if r.err == nil && (nkeys > len(d.Revoked) || ncerts > len(d.Retired)) {
		r.err = errors.New("truncated")
	}
	if r.err == nil && nkeys+ncerts == 0 {
		r.err = errors.New("names no key and no certificate")
	}
}
