// Package key handles WireGuard Curve25519 keys: generation, base64 text
// form, public key derivation.
package key

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"golang.org/x/crypto/curve25519"
)

// Len is the length of a key in bytes.
const Len = 32

// Key is a Curve25519 public key, or a preshared key (a private key is a
// Private).
// It is a value type and may be compared with ==.
type Key [Len]byte

// Parse parses a key in the standard base64 form printed by wg genkey.
//
// The error never contains the input: it may be a private key.
func Parse(s string) (Key, error) {
	var k Key
	// A 32-byte key is exactly 44 base64 characters with one '=' of padding.
	if len(s) != base64.StdEncoding.EncodedLen(Len) {
		return k, fmt.Errorf("key: must be %d base64 characters, got %d", base64.StdEncoding.EncodedLen(Len), len(s))
	}
	// Decode into a fresh slice, not k[:]: 44 characters without padding
	// decode to 33 bytes, and Decode panics if dst is too short.
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		// The CorruptInputError offset does not reveal the key.
		return k, fmt.Errorf("key: invalid base64: %v", err)
	}
	if len(b) != Len {
		return k, fmt.Errorf("key: must decode to %d bytes, got %d", Len, len(b))
	}
	copy(k[:], b)
	return k, nil
}

// String returns k in standard base64.
func (k Key) String() string {
	return base64.StdEncoding.EncodeToString(k[:])
}

// IsZero reports whether k is the all-zero key, the zero value.
func (k Key) IsZero() bool {
	return k == Key{}
}

// Private is a Curve25519 private key. It is a type of its own so that it
// cannot be printed by accident: String, fmt's verbs and slog all show
// "(private key)", and it does not marshal to text or JSON. Encode is the
// one way to its base64 form, for key files and genkey.
type Private [Len]byte

// redacted is what a private key prints as.
const redacted = "(private key)"

// NewPrivate returns a new random private key, clamped as wg genkey does.
func NewPrivate() (Private, error) {
	var k Private
	if _, err := rand.Read(k[:]); err != nil {
		return Private{}, err
	}
	k.clamp()
	return k, nil
}

// ParsePrivate parses a private key in wg genkey's base64 form. The error
// never contains the input.
func ParsePrivate(s string) (Private, error) {
	k, err := Parse(s)
	return Private(k), err
}

// clamp applies the Curve25519 private key clamping (RFC 7748, section 5).
// X25519 clamps internally anyway; wg genkey stores the clamped form, so we
// do the same to produce identical key files.
func (k *Private) clamp() {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// Encode returns k in standard base64, as wg genkey prints it.
func (k Private) Encode() string { return Key(k).String() }

// String hides the key.
func (k Private) String() string { return redacted }

// Format hides the key from every fmt verb.
func (k Private) Format(f fmt.State, _ rune) { io.WriteString(f, redacted) }

// LogValue hides the key from slog.
func (k Private) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText refuses: a private key is written out only with Encode.
func (k Private) MarshalText() ([]byte, error) {
	return nil, errors.New("key: a private key is not marshalled")
}

// IsZero reports whether k is the all-zero key, the zero value.
func (k Private) IsZero() bool { return k == Private{} }

// Public returns the public key corresponding to the private key k.
func (k Private) Public() Key {
	var pub Key
	// X25519 with the base point only fails for low-order points, which the
	// base point is not, so the error is impossible.
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		panic("key: X25519 with base point failed: " + err.Error())
	}
	copy(pub[:], p)
	return pub
}

// MarshalText implements encoding.TextMarshaler.
func (k Key) MarshalText() ([]byte, error) {
	return []byte(k.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Key) UnmarshalText(text []byte) error {
	if k == nil {
		return errors.New("key: UnmarshalText on nil pointer")
	}
	p, err := Parse(string(text))
	if err != nil {
		return err
	}
	*k = p
	return nil
}
