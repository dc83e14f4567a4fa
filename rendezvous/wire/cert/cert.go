// Package cert is a network's membership: a network key (Ed25519, kept
// offline by its owner) signs a certificate for each member's WireGuard
// key, and anyone holding the network's public key verifies it. It knows
// nothing of sockets, the rendezvous or WireGuard's devices: both the
// rendezvous and the peer use it, and so does `punchtun network`.
//
// A certificate has exactly one encoding (version 1; all integers big
// endian):
//
//	version     1 byte   1
//	network    32 bytes  the network's Ed25519 public key
//	member     32 bytes  the member's WireGuard (Curve25519) public key
//	not before  8 bytes  Unix seconds
//	not after   8 bytes  Unix seconds, after not before
//	name        1 byte length (1..63), then a DNS label: a-z 0-9 '-', no '-' at either end
//	addresses   1 byte count (1..4), then per address:
//	            1 byte family (4 or 6), 4 or 16 bytes of address, 1 byte prefix length
//	            (1..32 or 1..128); unicast, not IPv4-mapped, sorted, no address twice
//	groups      1 byte count (0..8), then labels as the name, sorted, none twice
//	signature  64 bytes  Ed25519 by the network key over every byte before it
//
// Parse rejects anything else: another version, a field out of its bounds,
// an unsorted list, trailing bytes, a signature that does not verify.
// Since every field has one form and lists one order, two encodings that
// verify are two certificates, and the fingerprint (SHA-256 of the
// encoding) names one.
//
// docs/protocol.md has this format, the documents' and the protocol's in
// one place.
package cert

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Version is the encoding this package writes and reads.
const Version = 1

// Bounds of the encoding.
const (
	MaxLabel     = 63 // a name's or group's length, as a DNS label
	MaxAddresses = 4
	MaxGroups    = 8
	// MaxLen is the longest encoding: header, name, addresses, groups, signature.
	MaxLen = 1 + 32 + 32 + 8 + 8 + (1 + MaxLabel) + 1 + MaxAddresses*(1+16+1) + 1 + MaxGroups*(1+MaxLabel) + ed25519.SignatureSize
)

// Skew is how far ahead of this machine's clock a certificate's start may
// be and still count as valid: a certificate signed a moment ago on a
// machine whose clock runs a little fast works at once. Expiry is exact:
// a certificate is invalid from its not-after second on.
const Skew = 5 * time.Minute

// Cert is a parsed, signature-checked certificate. Its fields are read
// only; Sign makes new ones.
type Cert struct {
	Network   NetworkKey
	Member    key.Key
	NotBefore time.Time
	NotAfter  time.Time
	Name      string
	Addresses []netip.Prefix // each an address with the network's prefix length
	Groups    []string

	raw []byte // the signed encoding
}

// Template is what the network owner decides about a member.
type Template struct {
	Member    key.Key
	Name      string
	Addresses []netip.Prefix
	Groups    []string
	NotBefore time.Time
	NotAfter  time.Time
}

// Sign returns the certificate for t signed by the network key priv.
// Addresses and groups are sorted for the one encoding; duplicates and
// out-of-bound fields are errors.
func Sign(priv NetworkPrivate, t Template) (*Cert, error) {
	t.Addresses = slices.Clone(t.Addresses)
	slices.SortFunc(t.Addresses, comparePrefix)
	t.Groups = slices.Clone(t.Groups)
	slices.Sort(t.Groups)
	c := &Cert{Network: priv.Public(), Member: t.Member, Name: t.Name, Addresses: t.Addresses, Groups: t.Groups,
		NotBefore: time.Unix(t.NotBefore.Unix(), 0), NotAfter: time.Unix(t.NotAfter.Unix(), 0)}
	if err := c.checkFields(); err != nil {
		return nil, err
	}
	body := c.appendBody(make([]byte, 0, MaxLen))
	c.raw = append(body, ed25519.Sign(priv.key(), body)...)
	return c, nil
}

// Parse decodes a certificate's binary encoding and checks every field and
// the signature by the network key it names. Whether that network is the
// one wanted, and whether the certificate is valid now, is Check's.
func Parse(b []byte) (*Cert, error) {
	if len(b) > MaxLen {
		return nil, fmt.Errorf("certificate: %d bytes, at most %d", len(b), MaxLen)
	}
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != Version {
		return nil, fmt.Errorf("certificate: version %d, this punchtun reads version %d", v, Version)
	}
	c := &Cert{}
	copy(c.Network[:], r.take(32))
	copy(c.Member[:], r.take(32))
	c.NotBefore = r.time()
	c.NotAfter = r.time()
	c.Name = r.label()
	for range r.count(1, MaxAddresses, "addresses") {
		c.Addresses = append(c.Addresses, r.prefix())
	}
	for range r.count(0, MaxGroups, "groups") {
		c.Groups = append(c.Groups, r.label())
	}
	bodyLen := r.off
	sig := r.take(ed25519.SignatureSize)
	if r.err != nil {
		return nil, fmt.Errorf("certificate: %w", r.err)
	}
	if r.off != len(b) {
		return nil, fmt.Errorf("certificate: %d bytes after the signature", len(b)-r.off)
	}
	if err := c.checkFields(); err != nil {
		return nil, err
	}
	if !slices.IsSortedFunc(c.Addresses, comparePrefix) || !slices.IsSorted(c.Groups) {
		return nil, errors.New("certificate: addresses or groups out of order (not the one encoding)")
	}
	if !ed25519.Verify(c.Network[:], b[:bodyLen], sig) {
		return nil, &Error{Reason: BadSignature, Detail: "signature does not verify with the network key it names"}
	}
	c.raw = slices.Clone(b)
	return c, nil
}

// ParseText parses a certificate's text form: its encoding in standard
// base64, one line, surrounding white space ignored.
func ParseText(s string) (*Cert, error) {
	b, err := decodeText(s, MaxLen, "certificate")
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

// Bytes returns the signed encoding. The caller must not modify it.
func (c *Cert) Bytes() []byte { return c.raw }

// Text returns the certificate's text form, as configs hold it.
func (c *Cert) Text() string { return base64.StdEncoding.EncodeToString(c.raw) }

// Fingerprint is the SHA-256 of the encoding, in hex.
func (c *Cert) Fingerprint() string {
	h := sha256.Sum256(c.raw)
	return hex.EncodeToString(h[:])
}

// Check reports whether c is a certificate of network at time now, as an
// *Error with the reason when it is not.
func (c *Cert) Check(network NetworkKey, now time.Time) error {
	switch {
	case c.Network != network:
		return &Error{Reason: OtherNetwork, Detail: "signed by network " + c.Network.String()}
	case now.Add(Skew).Before(c.NotBefore):
		return &Error{Reason: NotYetValid, Detail: "valid from " + c.NotBefore.UTC().Format(time.RFC3339)}
	case !now.Before(c.NotAfter):
		return &Error{Reason: Expired, Detail: "expired " + c.NotAfter.UTC().Format(time.RFC3339)}
	}
	return nil
}

// Holds reports whether addr is one of the certificate's addresses.
func (c *Cert) Holds(addr netip.Addr) bool {
	for _, p := range c.Addresses {
		if p.Addr() == addr {
			return true
		}
	}
	return false
}

// checkFields checks every field's bounds; Sign and Parse share it.
func (c *Cert) checkFields() error {
	if c.Member.IsZero() {
		return errors.New("certificate: member key is all zeros")
	}
	if !c.NotBefore.Before(c.NotAfter) {
		return errors.New("certificate: not after must be later than not before")
	}
	if err := CheckLabel(c.Name); err != nil {
		return fmt.Errorf("certificate: name: %w", err)
	}
	if n := len(c.Addresses); n < 1 || n > MaxAddresses {
		return fmt.Errorf("certificate: %d addresses, must be 1 to %d", n, MaxAddresses)
	}
	for i, p := range c.Addresses {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("certificate: address %s: %w", p, err)
		}
		if i > 0 && c.Addresses[i-1].Addr() == p.Addr() {
			return fmt.Errorf("certificate: address %s given twice", p.Addr())
		}
	}
	if len(c.Groups) > MaxGroups {
		return fmt.Errorf("certificate: %d groups, at most %d", len(c.Groups), MaxGroups)
	}
	for i, g := range c.Groups {
		if err := CheckLabel(g); err != nil {
			return fmt.Errorf("certificate: group: %w", err)
		}
		if i > 0 && c.Groups[i-1] == g {
			return fmt.Errorf("certificate: group %q given twice", g)
		}
	}
	return nil
}

// CheckLabel checks a name or group: a DNS label of lowercase letters,
// digits and inner hyphens, so that `<name>.<Domain>` resolves as typed.
func CheckLabel(s string) error {
	if len(s) == 0 || len(s) > MaxLabel {
		return fmt.Errorf("%q: must be 1 to %d characters", s, MaxLabel)
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
			return fmt.Errorf("%q: only a-z, 0-9 and '-' are allowed", s)
		}
	}
	if s[0] == '-' || s[len(s)-1] == '-' {
		return fmt.Errorf("%q: must not start or end with '-'", s)
	}
	return nil
}

func checkPrefix(p netip.Prefix) error {
	a := p.Addr()
	switch {
	case !p.IsValid():
		return errors.New("not an address with a prefix length")
	case a.Zone() != "":
		return errors.New("has a zone")
	case a.Is4In6():
		return errors.New("IPv4-mapped IPv6; give the IPv4 address")
	case !a.IsGlobalUnicast():
		return errors.New("not a unicast address")
	case p.Bits() == 0:
		return errors.New("prefix length 0")
	}
	return nil
}

// comparePrefix orders addresses for the one encoding: IPv4 before IPv6,
// then by address.
func comparePrefix(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) }

func (c *Cert) appendBody(b []byte) []byte {
	b = append(b, Version)
	b = append(b, c.Network[:]...)
	b = append(b, c.Member[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(c.NotBefore.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(c.NotAfter.Unix()))
	b = appendLabel(b, c.Name)
	b = append(b, byte(len(c.Addresses)))
	for _, p := range c.Addresses {
		b = appendPrefix(b, p)
	}
	b = append(b, byte(len(c.Groups)))
	for _, g := range c.Groups {
		b = appendLabel(b, g)
	}
	return b
}

func appendLabel(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }

// appendPrefix writes a prefix as reader.prefix reads it: family (4 or
// 6), the address, the prefix length.
func appendPrefix(b []byte, p netip.Prefix) []byte {
	fam := byte(6)
	if p.Addr().Is4() {
		fam = 4
	}
	b = append(append(b, fam), p.Addr().AsSlice()...)
	return append(b, byte(p.Bits()))
}
