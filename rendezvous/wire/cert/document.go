package cert

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Documents the network key signs besides certificates: a policy (the
// rules members enforce on what they receive, Rule) and a revocation
// (member keys cut off before their certificates expire). One encoding,
// version 1, integers big endian:
//
//	kind        1 byte   'P' (policy) or 'R' (revocation)
//	version     1 byte   1 (a policy), 2 (a revocation; 1 still read)
//	network    32 bytes  the network's Ed25519 public key
//	seq         8 bytes  the signer's sequence number (default: Unix time
//	                     of signing); a policy with a higher seq replaces one
//	                     with a lower
//	body                 a policy's rules (Rule) or a revocation's
//	                     entries (keys, RetiredCert)
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
	docHeader   = 1 + 1 + 32 + 8
)

// Document is a parsed, signature-checked policy or revocation. Its
// fields are read only.
type Document struct {
	Kind    byte
	Network NetworkKey
	Seq     uint64
	Rules   []Rule        // a policy's; none allow nothing
	Revoked []key.Key     // a revocation's keys, sorted: every certificate of each is void
	Retired []RetiredCert // a revocation's certificates, by fingerprint, sorted

	version byte // of the encoding: revocations of version 1 are still read
	raw     []byte
	hash    [32]byte // of raw
}

// SignPolicy returns the policy of rules signed by priv.
func SignPolicy(priv NetworkPrivate, seq uint64, rules []Rule) (*Document, error) {
	return sign(priv, &Document{Kind: KindPolicy, Seq: seq, Rules: rules})
}

func sign(priv NetworkPrivate, d *Document) (*Document, error) {
	d.Network = priv.Public()
	d.version = Version
	if d.Kind == KindRevocation {
		d.version = revocationVersion
	}
	b, err := d.appendBody(nil)
	if err != nil {
		return nil, err
	}
	if len(b)+ed25519.SignatureSize > MaxDocument {
		return nil, fmt.Errorf("%s: %d bytes signed, at most %d: use fewer rules, selectors or keys", d.KindName(), len(b)+ed25519.SignatureSize, MaxDocument)
	}
	d.raw = append(b, ed25519.Sign(priv.key(), b)...)
	d.hash = sha256.Sum256(d.raw)
	return d, nil
}

// appendBody writes everything the signature covers.
func (d *Document) appendBody(b []byte) ([]byte, error) {
	b = append(b, d.Kind, d.version)
	b = append(b, d.Network[:]...)
	b = binary.BigEndian.AppendUint64(b, d.Seq)
	if d.Kind == KindPolicy {
		return appendRules(b, d.Rules)
	}
	return d.appendRevocation(b)
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
	d.version = r.byte()
	if r.err == nil && d.version != Version && (d.Kind != KindRevocation || d.version != revocationVersion) {
		return nil, fmt.Errorf("%s: version %d, this punchtun reads versions 1 and %d", d.KindName(), d.version, revocationVersion)
	}
	copy(d.Network[:], r.take(32))
	d.Seq = binary.BigEndian.Uint64(r.take(8))
	if d.Kind == KindPolicy {
		d.Rules = r.rules()
	} else {
		r.revocation(d)
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
	d.hash = sha256.Sum256(d.raw)
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
func (d *Document) Hash() [32]byte { return d.hash }

// KindName is "policy" or "revocation".
func (d *Document) KindName() string {
	if d.Kind == KindRevocation {
		return "revocation"
	}
	return "policy"
}

func compareKey(a, b key.Key) int { return bytes.Compare(a[:], b[:]) }
