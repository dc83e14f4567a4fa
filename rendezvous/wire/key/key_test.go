package key

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func mustHex(t *testing.T, s string) Key {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != Len {
		t.Fatalf("bad test hex %q", s)
	}
	var k Key
	copy(k[:], b)
	return k
}

// TestPublicRFC7748 checks Public against the key pairs of RFC 7748,
// section 6.1.
func TestPublicRFC7748(t *testing.T) {
	tests := []struct{ priv, pub string }{
		{ // Alice
			"77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
			"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
		},
		{ // Bob
			"5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
			"de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
		},
	}
	for _, tt := range tests {
		priv, want := Private(mustHex(t, tt.priv)), mustHex(t, tt.pub)
		if got := priv.Public(); got != want {
			t.Errorf("Public(%s) = %x, want %x", tt.priv, got[:], want[:])
		}
	}
}

// TestPublicBase64 checks the base64 path end to end. The public key was
// cross-checked with OpenSSL's X25519 (via Python's cryptography package).
func TestPublicBase64(t *testing.T) {
	const (
		priv = "YAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
		pub  = "Y2FD6uTgrq+/bbBAXCNOtE+PGk8Papoh7qaWBpQUXn0="
	)
	k, err := ParsePrivate(priv)
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Public().String(); got != pub {
		t.Errorf("Public = %s, want %s", got, pub)
	}
	// RFC 7748 Alice in base64.
	k, err = ParsePrivate("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := k.Public().String(), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="; got != want {
		t.Errorf("Public = %s, want %s", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	for range 100 {
		k, err := NewPrivate()
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParsePrivate(k.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if p != k {
			t.Fatal("ParsePrivate(Encode()) differs")
		}
	}
}

// TestPrivateNeverPrints: a private key shows as "(private key)" through
// fmt's verbs and slog, and does not marshal; Encode alone writes it out.
func TestPrivateNeverPrints(t *testing.T) {
	k, err := NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	secret := k.Encode()
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "key", k)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "key", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%s %v %+v %#v %x %q", k, k, k, k, k, k), k.String(), logged.String()} {
		if strings.Contains(s, secret) || strings.Contains(s, fmt.Sprintf("%x", k[:])) || !strings.Contains(s, redacted) {
			t.Errorf("private key printed: %q", s)
		}
	}
	if b, err := json.Marshal(struct{ K Private }{k}); err == nil {
		t.Errorf("private key marshalled to JSON: %s", b)
	}
}

func TestNewPrivateClamped(t *testing.T) {
	seen := make(map[Private]bool)
	for range 1000 {
		k, err := NewPrivate()
		if err != nil {
			t.Fatal(err)
		}
		if k[0]&7 != 0 || k[31]&128 != 0 || k[31]&64 == 0 {
			t.Fatalf("key not clamped: %x", k[:])
		}
		if seen[k] {
			t.Fatalf("duplicate key %x", k[:])
		}
		seen[k] = true
		if k.Public().IsZero() {
			t.Fatal("zero public key")
		}
	}
}

func TestIsZero(t *testing.T) {
	var k Key
	if !k.IsZero() {
		t.Error("zero Key: IsZero = false")
	}
	k[31] = 1
	if k.IsZero() {
		t.Error("non-zero Key: IsZero = true")
	}
}

func TestParseErrors(t *testing.T) {
	const secret = "YAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBm" // valid prefix
	tests := []string{
		"",
		"short",
		secret,         // 42 chars
		secret + "k=x", // 45 chars
		secret + "!=",  // bad character
		secret + "k",   // 43 chars, missing padding
		secret + "kk",  // 44 chars, no padding: would decode 33 bytes
		strings.Repeat("=", 44),
		"YAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmn=", // non-zero trailing bits
	}
	for _, s := range tests {
		k, err := Parse(s)
		if err == nil {
			t.Errorf("Parse(%q) = %s, want error", s, k)
			continue
		}
		if len(s) > 8 && strings.Contains(err.Error(), s[:8]) {
			t.Errorf("Parse(%q) error %q contains the key text", s, err)
		}
		if !k.IsZero() {
			t.Errorf("Parse(%q) returned non-zero key with error", s)
		}
	}
}

func TestJSON(t *testing.T) {
	k, err := NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	in := struct{ K Key }{k.Public()}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"K":"` + k.Public().String() + `"}`; string(b) != want {
		t.Errorf("Marshal = %s, want %s", b, want)
	}
	var out struct{ K Key }
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.K != k.Public() {
		t.Errorf("Unmarshal = %s, want %s", out.K, k.Public())
	}
	if err := json.Unmarshal([]byte(`{"K":"nope"}`), &out); err == nil {
		t.Error("Unmarshal of bad key: no error")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("YAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=")
	f.Add("YAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmkk")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s)
		if err != nil {
			if !k.IsZero() {
				t.Fatal("non-zero key with error")
			}
			return
		}
		// Strict decoding means exactly one text form per key.
		if k.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, k)
		}
	})
}
