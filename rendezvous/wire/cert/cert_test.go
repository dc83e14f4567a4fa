package cert

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

func testNetwork(t *testing.T) NetworkPrivate {
	t.Helper()
	k, err := NewNetworkPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testMember(t *testing.T) key.Key {
	t.Helper()
	p, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return p.Public()
}

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func testTemplate(member key.Key) Template {
	return Template{
		Member:    member,
		Name:      "m7",
		Addresses: []netip.Prefix{netip.MustParsePrefix("fd00::7/64"), netip.MustParsePrefix("100.64.0.7/24")},
		Groups:    []string{"servers", "laptops"},
		NotBefore: t0,
		NotAfter:  t0.Add(365 * 24 * time.Hour),
	}
}

func TestSignParseRoundTrip(t *testing.T) {
	nk := testNetwork(t)
	member := testMember(t)
	c, err := Sign(nk, testTemplate(member))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseText(c.Text() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.Network != nk.Public() || got.Member != member || got.Name != "m7" {
		t.Errorf("parsed %+v", got)
	}
	// Sorted for the one encoding: IPv4 before IPv6, groups alphabetical.
	if got.Addresses[0].String() != "100.64.0.7/24" || got.Addresses[1].String() != "fd00::7/64" {
		t.Errorf("addresses %v", got.Addresses)
	}
	if strings.Join(got.Groups, ",") != "laptops,servers" {
		t.Errorf("groups %v", got.Groups)
	}
	if !got.NotBefore.Equal(t0) || !got.NotAfter.Equal(t0.Add(365*24*time.Hour)) {
		t.Errorf("validity %v..%v", got.NotBefore, got.NotAfter)
	}
	if got.Fingerprint() != c.Fingerprint() || len(c.Fingerprint()) != 64 {
		t.Errorf("fingerprint %s vs %s", got.Fingerprint(), c.Fingerprint())
	}
	if !got.Holds(netip.MustParseAddr("100.64.0.7")) || got.Holds(netip.MustParseAddr("100.64.0.8")) {
		t.Error("Holds")
	}
	if len(c.Bytes()) > MaxLen {
		t.Errorf("%d bytes > MaxLen %d", len(c.Bytes()), MaxLen)
	}
}

func TestCheck(t *testing.T) {
	nk := testNetwork(t)
	c, err := Sign(nk, testTemplate(testMember(t)))
	if err != nil {
		t.Fatal(err)
	}
	other := testNetwork(t).Public()
	for _, tc := range []struct {
		name    string
		network NetworkKey
		now     time.Time
		want    Reason
	}{
		{"valid", nk.Public(), t0.Add(time.Hour), 0},
		{"at start", nk.Public(), t0, 0},
		{"within skew before start", nk.Public(), t0.Add(-Skew + time.Second), 0},
		{"before start", nk.Public(), t0.Add(-Skew - time.Second), NotYetValid},
		{"at expiry", nk.Public(), c.NotAfter, Expired},
		{"last second", nk.Public(), c.NotAfter.Add(-time.Second), 0},
		{"other network", other, t0.Add(time.Hour), OtherNetwork},
	} {
		err := c.Check(tc.network, tc.now)
		if tc.want == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if ReasonOf(err) != tc.want {
			t.Errorf("%s: got %v, want reason %v", tc.name, err, tc.want)
		}
	}
}

func TestSignRefusesBadFields(t *testing.T) {
	nk := testNetwork(t)
	m := testMember(t)
	for name, edit := range map[string]func(*Template){
		"upper-case name": func(t *Template) { t.Name = "M7" },
		"empty name":      func(t *Template) { t.Name = "" },
		"long name":       func(t *Template) { t.Name = strings.Repeat("a", 64) },
		"hyphen at end":   func(t *Template) { t.Name = "m7-" },
		"dot in name":     func(t *Template) { t.Name = "m.7" },
		"no address":      func(t *Template) { t.Addresses = nil },
		"five addresses": func(t *Template) {
			t.Addresses = append(t.Addresses, pfx("10.0.0.1/8"), pfx("10.0.0.2/8"), pfx("10.0.0.3/8"))
		},
		"address twice":     func(t *Template) { t.Addresses = append(t.Addresses, pfx("100.64.0.7/16")) },
		"multicast":         func(t *Template) { t.Addresses = []netip.Prefix{pfx("224.0.0.1/24")} },
		"loopback":          func(t *Template) { t.Addresses = []netip.Prefix{pfx("127.0.0.1/8")} },
		"v4-mapped":         func(t *Template) { t.Addresses = []netip.Prefix{pfx("::ffff:100.64.0.7/120")} },
		"prefix 0":          func(t *Template) { t.Addresses = []netip.Prefix{pfx("100.64.0.7/0")} },
		"group twice":       func(t *Template) { t.Groups = []string{"a", "a"} },
		"nine groups":       func(t *Template) { t.Groups = strings.Split("a b c d e f g h i", " ") },
		"bad group":         func(t *Template) { t.Groups = []string{"Laptops"} },
		"ends before start": func(t *Template) { t.NotAfter = t.NotBefore },
		"zero member":       func(t *Template) { t.Member = key.Key{} },
	} {
		tpl := testTemplate(m)
		edit(&tpl)
		if _, err := Sign(nk, tpl); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestParseRefusesOtherForms: every byte changed, every length cut, any
// byte appended, a second encoding of the same fields: none parses.
func TestParseRefusesOtherForms(t *testing.T) {
	nk := testNetwork(t)
	c, err := Sign(nk, testTemplate(testMember(t)))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Bytes()
	for i := range b {
		m := bytes.Clone(b)
		m[i] ^= 0x01
		if _, err := Parse(m); err == nil {
			t.Errorf("byte %d flipped: parsed", i)
		}
	}
	for n := range len(b) {
		if _, err := Parse(b[:n]); err == nil {
			t.Errorf("cut to %d bytes: parsed", n)
		}
	}
	if _, err := Parse(append(bytes.Clone(b), 0)); err == nil {
		t.Error("trailing byte: parsed")
	}
	// The same fields, addresses out of order, signed properly: still refused.
	unsorted := &Cert{Network: c.Network, Member: c.Member, NotBefore: c.NotBefore, NotAfter: c.NotAfter, Name: c.Name,
		Addresses: []netip.Prefix{c.Addresses[1], c.Addresses[0]}, Groups: c.Groups}
	body := unsorted.appendBody(nil)
	if _, err := Parse(append(body, signWith(nk, body)...)); err == nil || !strings.Contains(err.Error(), "order") {
		t.Errorf("unsorted addresses: %v", err)
	}
	// Signed by another key than the one it names.
	forged := append(bytes.Clone(b[:len(b)-64]), signWith(testNetwork(t), b[:len(b)-64])...)
	if _, err := Parse(forged); ReasonOf(err) != BadSignature {
		t.Errorf("forged: %v", err)
	}
	v2 := bytes.Clone(b)
	v2[0] = 2
	if _, err := Parse(v2); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("version 2: %v", err)
	}
	for _, s := range []string{"", "not base64!", c.Text()[:len(c.Text())-1], strings.TrimRight(c.Text(), "=")} {
		if _, err := ParseText(s); err == nil {
			t.Errorf("ParseText(%q) parsed", s)
		}
	}
}

func signWith(k NetworkPrivate, body []byte) []byte { return ed25519.Sign(k.key(), body) }

func TestNetworkKeys(t *testing.T) {
	k := testNetwork(t)
	back, err := ParseNetworkPrivate(k.Encode())
	if err != nil || back != k {
		t.Fatalf("private round trip: %v", err)
	}
	pub, err := ParseNetworkKey(k.Public().String())
	if err != nil || pub != k.Public() {
		t.Fatalf("public round trip: %v", err)
	}
	for _, s := range []string{
		k.Encode() + "x", k.Encode()[:43], strings.Repeat("!", 44),
	} {
		_, err := ParseNetworkPrivate(s)
		if err == nil {
			t.Errorf("ParseNetworkPrivate(%q) parsed", s)
		} else if strings.Contains(err.Error(), k.Encode()[:10]) {
			t.Errorf("error shows the key: %v", err)
		}
	}
	var buf bytes.Buffer
	for _, v := range []string{"%v", "%s", "%#v", "%+v"} {
		buf.Reset()
		fmt.Fprintf(&buf, v, k)
		if strings.Contains(buf.String(), k.Encode()[:10]) {
			t.Errorf("%s prints the private key", v)
		}
	}
}

// FuzzParse: whatever parses re-encodes to the very same bytes (one
// encoding), and nothing panics.
func FuzzParse(f *testing.F) {
	nk, _ := NewNetworkPrivate()
	p, _ := key.NewPrivate()
	c, err := Sign(nk, testTemplate(p.Public()))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		body := c.appendBody(nil)
		if !bytes.Equal(append(body, b[len(body):]...), b) || len(b)-len(body) != ed25519.SignatureSize {
			t.Fatalf("parsed but re-encodes differently")
		}
	})
}
