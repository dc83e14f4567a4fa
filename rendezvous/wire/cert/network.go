package cert

import (
	"cmp"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// NetworkKey is a network's Ed25519 public key: what configs name in
// Network = and what the rendezvous groups members by. A value type.
type NetworkKey [ed25519.PublicKeySize]byte

// ParseNetworkKey parses a network public key's base64 form.
func ParseNetworkKey(s string) (NetworkKey, error) {
	// The same 44-character base64 form as a WireGuard key: key.Parse's
	// checks, and its errors, which never contain the input.
	k, err := key.Parse(s)
	if err != nil {
		return NetworkKey{}, fmt.Errorf("network %w", err)
	}
	return NetworkKey(k), nil
}

// String returns k in standard base64.
func (k NetworkKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether k is the zero value (no network).
func (k NetworkKey) IsZero() bool { return k == NetworkKey{} }

// NetworkPrivate is a network's private key: the Ed25519 seed. Like
// key.Private it never prints itself; Encode is the one way to its text.
type NetworkPrivate [ed25519.SeedSize]byte

// NewNetworkPrivate returns a new random network key.
func NewNetworkPrivate() (NetworkPrivate, error) {
	var k NetworkPrivate
	_, err := rand.Read(k[:])
	return k, err
}

// ParseNetworkPrivate parses a network private key's base64 form. The
// error never contains the input.
func ParseNetworkPrivate(s string) (NetworkPrivate, error) {
	k, err := key.Parse(s)
	if err != nil {
		return NetworkPrivate{}, fmt.Errorf("network private %w", err)
	}
	return NetworkPrivate(k), nil
}

// Encode returns the key's base64 form, for the key file.
func (k NetworkPrivate) Encode() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Public returns the network's public key.
func (k NetworkPrivate) Public() NetworkKey {
	return NetworkKey(k.key().Public().(ed25519.PublicKey))
}

func (k NetworkPrivate) key() ed25519.PrivateKey { return ed25519.NewKeyFromSeed(k[:]) }

// String hides the key from fmt's verbs and logs.
func (NetworkPrivate) String() string { return "(network private key)" }

// GoString hides the key from %#v.
func (NetworkPrivate) GoString() string { return "(network private key)" }

// LogValue hides the key from slog.
func (NetworkPrivate) LogValue() slog.Value { return slog.StringValue("(network private key)") }

// Reason says why a certificate or a member was refused. It travels in
// the rendezvous's Refused message as one byte, so its values are fixed.
type Reason uint8

const (
	BadSignature Reason = 1 + iota // not signed by the network it names
	OtherNetwork                   // signed by another network than the one wanted
	Expired
	NotYetValid
	KeyMismatch // for another WireGuard key than the one speaking
	Overlap     // its addresses overlap a peer's already there
	Malformed   // not a certificate (the encoding's checks failed)
	NetworkFull // the rendezvous serves no more members of this network
	Revoked     // the network key revoked the member's key (SignRevocation)
	Retired     // the network key retired this certificate (SignRevocations)
	Superseded  // a certificate of the same key with a later not-before was seen (Newest)
	// NumReasons is one more than the highest reason, for tables of them.
	NumReasons = iota + 1
)

var reasons = [NumReasons]string{"", "bad-signature", "other-network", "expired", "not-yet-valid", "key-mismatch", "overlap", "malformed", "network-full", "revoked", "retired", "superseded"}

// String is the reason's name in logs and metric labels.
func (r Reason) String() string {
	if int(r) < len(reasons) && r != 0 {
		return reasons[r]
	}
	return fmt.Sprintf("reason-%d", uint8(r))
}

// Error is a certificate, or a document (What), refused for a Reason.
type Error struct {
	Reason Reason
	Detail string
	What   string // "policy" or "revocation"; "" for a certificate
}

func (e *Error) Error() string {
	return cmp.Or(e.What, "certificate") + ": " + e.Reason.String() + ": " + e.Detail
}

// ReasonOf returns the reason err carries; Malformed for any other error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return Malformed
}

// reader reads the encoding's fields; the first error sticks and later
// reads return zero values, so Parse checks once at the end.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || len(r.b)-r.off < n {
		if r.err == nil {
			r.err = errors.New("truncated")
		}
		return make([]byte, n)
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *reader) byte() byte { return r.take(1)[0] }

func (r *reader) time() time.Time { return time.Unix(int64(binary.BigEndian.Uint64(r.take(8))), 0) }

func (r *reader) label() string {
	n := int(r.byte())
	s := string(r.take(n))
	if r.err == nil {
		if err := CheckLabel(s); err != nil {
			r.err = err
		}
	}
	return s
}

// count reads a list's length and checks it against its bounds.
func (r *reader) count(min, max int, what string) int {
	n := int(r.byte())
	if r.err == nil && (n < min || n > max) {
		r.err = fmt.Errorf("%d %s, must be %d to %d", n, what, min, max)
	}
	if r.err != nil {
		return 0
	}
	return n
}

func (r *reader) prefix() netip.Prefix {
	var a netip.Addr
	switch fam := r.byte(); fam {
	case 4:
		a = netip.AddrFrom4([4]byte(r.take(4)))
	case 6:
		a = netip.AddrFrom16([16]byte(r.take(16)))
	default:
		if r.err == nil {
			r.err = fmt.Errorf("address family %d, must be 4 or 6", fam)
		}
		return netip.Prefix{}
	}
	bits := int(r.byte())
	p := netip.PrefixFrom(a, bits)
	if r.err == nil && !p.IsValid() {
		r.err = fmt.Errorf("prefix length %d too long for %s", bits, a)
	}
	return p
}
