package cert

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Documents the network key signs besides certificates: a policy (the
// rules members enforce on what they receive, rules.go) and a revocation
// (member keys cut off before their certificates expire). One encoding,
// version 1, integers big endian:
//
//	kind        1 byte   'P' (policy) or 'R' (revocation)
//	version     1 byte   1
//	network    32 bytes  the network's Ed25519 public key
//	seq         8 bytes  the signer's sequence number (default: Unix time
//	                     of signing); a policy with a higher seq replaces one
//	                     with a lower
//	body                 a policy's rules (rules.go) or a revocation's keys:
//	                     1 byte count (1..MaxRevoked), 32-byte Curve25519
//	                     keys, sorted, none twice, none all zeros
//	signature  64 bytes  Ed25519 by the network key over every byte before it
//
// The first byte keeps the three kinds of signed bytes apart: a
// certificate starts with its version (1), a document with a letter, so
// no signature of one kind verifies as another. A document is at most
// MaxDocument bytes, so that it fits one packet inside the tunnel even at
// the smallest IPv6 MTU (members hand documents to each other in-tunnel).

// Kinds of document.
const (
	KindPolicy     byte = 'P'
	KindRevocation byte = 'R'
)

// Bounds of a document.
const (
	MaxDocument = 1200
	MaxRevoked  = 32
	docHeader   = 1 + 1 + 32 + 8
)

// Document is a parsed, signature-checked policy or revocation. Its
// fields are read only.
type Document struct {
	Kind    byte
	Network NetworkKey
	Seq     uint64
	Rules   []Rule    // a policy's; none allow nothing
	Revoked []key.Key // a revocation's, sorted

	raw []byte
}

// SignPolicy returns the policy of rules signed by priv.
func SignPolicy(priv NetworkPrivate, seq uint64, rules []Rule) (*Document, error) {
	return sign(priv, &Document{Kind: KindPolicy, Seq: seq, Rules: rules})
}

// SignRevocation returns the revocation of keys signed by priv.
func SignRevocation(priv NetworkPrivate, seq uint64, keys []key.Key) (*Document, error) {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, compareKey)
	keys = slices.Compact(keys)
	return sign(priv, &Document{Kind: KindRevocation, Seq: seq, Revoked: keys})
}

func sign(priv NetworkPrivate, d *Document) (*Document, error) {
	d.Network = priv.Public()
	b, err := d.appendBody(nil)
	if err != nil {
		return nil, err
	}
	if len(b)+ed25519.SignatureSize > MaxDocument {
		return nil, fmt.Errorf("%s: %d bytes signed, at most %d: use fewer rules, selectors or keys", d.KindName(), len(b)+ed25519.SignatureSize, MaxDocument)
	}
	d.raw = append(b, ed25519.Sign(priv.key(), b)...)
	return d, nil
}

// appendBody writes everything the signature covers.
func (d *Document) appendBody(b []byte) ([]byte, error) {
	b = append(b, d.Kind, Version)
	b = append(b, d.Network[:]...)
	b = binary.BigEndian.AppendUint64(b, d.Seq)
	if d.Kind == KindPolicy {
		return appendRules(b, d.Rules)
	}
	return appendRevoked(b, d.Revoked)
}

func appendRevoked(b []byte, keys []key.Key) ([]byte, error) {
	if len(keys) < 1 || len(keys) > MaxRevoked {
		return nil, fmt.Errorf("revocation: %d keys, must be 1 to %d", len(keys), MaxRevoked)
	}
	b = append(b, byte(len(keys)))
	for _, k := range keys {
		if k.IsZero() {
			return nil, errors.New("revocation: a key is all zeros")
		}
		b = append(b, k[:]...)
	}
	return b, nil
}

// ParseDocument decodes a document's encoding and checks every field and
// the signature by the network key it names. Which network is wanted is
// the caller's (d.Network).
func ParseDocument(b []byte) (*Document, error) {
	if len(b) > MaxDocument {
		return nil, fmt.Errorf("document: %d bytes, at most %d", len(b), MaxDocument)
	}
	r := reader{b: b}
	d := &Document{Kind: r.byte()}
	if r.err == nil && d.Kind != KindPolicy && d.Kind != KindRevocation {
		return nil, fmt.Errorf("document: kind %#x is neither a policy ('P') nor a revocation ('R')", d.Kind)
	}
	if v := r.byte(); r.err == nil && v != Version {
		return nil, fmt.Errorf("%s: version %d, this punchtun reads version %d", d.KindName(), v, Version)
	}
	copy(d.Network[:], r.take(32))
	d.Seq = binary.BigEndian.Uint64(r.take(8))
	if d.Kind == KindPolicy {
		d.Rules = r.rules()
	} else {
		for range r.count(1, MaxRevoked, "keys") {
			k := key.Key(r.take(32))
			if r.err == nil && (k.IsZero() || len(d.Revoked) > 0 && compareKey(d.Revoked[len(d.Revoked)-1], k) >= 0) {
				r.err = errors.New("keys all zeros, out of order or twice (not the one encoding)")
			}
			d.Revoked = append(d.Revoked, k)
		}
	}
	bodyLen := r.off
	sig := r.take(ed25519.SignatureSize)
	if r.err != nil {
		return nil, fmt.Errorf("%s: %w", d.KindName(), r.err)
	}
	if r.off != len(b) {
		return nil, fmt.Errorf("%s: %d bytes after the signature", d.KindName(), len(b)-r.off)
	}
	if !ed25519.Verify(d.Network[:], b[:bodyLen], sig) {
		return nil, &Error{Reason: BadSignature, What: d.KindName(), Detail: "signature does not verify with the network key it names"}
	}
	d.raw = slices.Clone(b)
	return d, nil
}

// ParseDocumentText parses a document's text form: its encoding in
// standard base64, one line, surrounding white space ignored.
func ParseDocumentText(s string) (*Document, error) {
	b, err := decodeText(s, MaxDocument, "document")
	if err != nil {
		return nil, err
	}
	return ParseDocument(b)
}

// decodeText decodes the one-line base64 text of at most max bytes.
func decodeText(s string, max int, what string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) > base64.StdEncoding.EncodedLen(max) {
		return nil, fmt.Errorf("%s: %d characters, at most %d", what, len(s), base64.StdEncoding.EncodedLen(max))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s: not base64: %v", what, err)
	}
	return b, nil
}

// Bytes returns the signed encoding. The caller must not modify it.
func (d *Document) Bytes() []byte { return d.raw }

// Text returns the document's text form, as `network policy` prints it.
func (d *Document) Text() string { return base64.StdEncoding.EncodeToString(d.raw) }

// Hash is the SHA-256 of the encoding: what names a revocation in a
// Summary.
func (d *Document) Hash() [32]byte { return sha256.Sum256(d.raw) }

// KindName is "policy" or "revocation".
func (d *Document) KindName() string {
	if d.Kind == KindRevocation {
		return "revocation"
	}
	return "policy"
}

func compareKey(a, b key.Key) int { return bytes.Compare(a[:], b[:]) }
