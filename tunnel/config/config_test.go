package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Test keys. Each public key is the X25519 public key of the private key
// on its left, computed independently with OpenSSL.
const (
	alicePriv = "KNgGyX8OAK8aH8Myj6djqSaXI8jbj6xPk69x2xhtblA="
	alicePub  = "Losog8J7ORNZ19DBXQCBWmaTKQo43Y66NBzAfdqo7U0="
	bobPub    = "wLEmtaoTS4TmRiUla43olzeHYSsfODnSxgUm0hFOiG0="
	carolPub  = "M/0GjzTtTLdGKCVJXx9lm2HwRup6ejiQMy7nO0asFCU="
	rvPub     = "r0X3tvbseu864FWXQtjrhL+Oi6ig1+Kv5QVg7gUTOjc="
	rv2Pub    = "qOap+yrk5VjaJhTQvqNY8IH+qELBhISDwJ4Qdq2I0mE="
	psk       = "Iz7fpYyEhHcS6RFXJTOQfcRnccKvAizqB2a0ItRPMeU="
)

// expand replaces the placeholders {alice}, {alicepub}, {bob}, {carol},
// {rv}, {rv2} and {psk} with the test keys, so that configs stay readable.
var expand = strings.NewReplacer(
	"{alice}", alicePriv,
	"{alicepub}", alicePub,
	"{bob}", bobPub,
	"{carol}", carolPub,
	"{rv}", rvPub,
	"{rv2}", rv2Pub,
	"{psk}", psk,
).Replace

func mustKey(s string) key.Key {
	k, err := key.Parse(s)
	if err != nil {
		panic(err)
	}
	return k
}

func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

const example = `[Interface]
PrivateKey = {alice}
Address = 100.64.0.1/24            # one or more CIDRs, comma-separated
ListenPort = 51820                 # optional; absent or 0 = any free port
MTU = 1280
Rendezvous = 203.0.113.10:3478     # host:port (a name resolves too)
RendezvousKey = {rv}

[Peer]
Name = bob
PublicKey = {bob}
AllowedIPs = 100.64.0.2/32
Endpoint = 198.51.100.7:51820
PersistentKeepalive = 25
`

func TestKeyVectors(t *testing.T) {
	if got := key.Private(mustKey(alicePriv)).Public().String(); got != alicePub {
		t.Fatalf("public key of test key = %s, want %s", got, alicePub)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		conf string
		want *Config
	}{
		{
			name: "example",
			conf: example,
			want: &Config{
				Interface: Interface{
					PrivateKey:    key.Private(mustKey(alicePriv)),
					Addresses:     prefixes("100.64.0.1/24"),
					ListenPort:    51820,
					MTU:           1280,
					Rendezvous:    []string{"203.0.113.10:3478"},
					RendezvousKey: []key.Key{mustKey(rvPub)},
				},
				Peers: []Peer{{
					Name:                "bob",
					PublicKey:           mustKey(bobPub),
					AllowedIPs:          prefixes("100.64.0.2/32"),
					Endpoint:            "198.51.100.7:51820",
					PersistentKeepalive: 25,
				}},
			},
		},
		{
			name: "comments and case",
			conf: "\uFEFF# punchtun config\r\n" +
				"\r\n" +
				"  [INTERFACE]  # the local end\r\n" +
				"privatekey={alice}#no space before the comment\r\n" +
				"  ADDRESS   =   100.64.0.1/24   \r\n" +
				"# Address = 10.0.0.1/8\r\n" +
				"mtu = 1420\r\n" +
				"[peer]\r\n" +
				"publicKEY = {bob}\r\n" +
				"ENDPOINT = 198.51.100.7:51820 # bob's NAT\r\n" +
				"persistentkeepalive = off\r\n",
			want: &Config{
				Interface: Interface{
					PrivateKey: key.Private(mustKey(alicePriv)),
					Addresses:  prefixes("100.64.0.1/24"),
					MTU:        1420,
				},
				Peers: []Peer{{
					PublicKey: mustKey(bobPub),
					Endpoint:  "198.51.100.7:51820",
				}},
			},
		},
		{
			name: "multiple Address lines and lists",
			conf: `
[Interface]
PrivateKey = {alice}
Address = 100.64.0.1/24, 100.64.1.1/24
Address = 10.9.0.1
Address = ,  , fd00::1/64,
Address =
[Peer]
PublicKey = {bob}
AllowedIPs = 100.64.0.5/24, 10.9.0.2
AllowedIPs = fd00::2, fd00:1::7/48
Endpoint = 198.51.100.7:51820
`,
			want: &Config{
				Interface: Interface{
					PrivateKey: key.Private(mustKey(alicePriv)),
					Addresses:  prefixes("100.64.0.1/24", "100.64.1.1/24", "10.9.0.1/32", "fd00::1/64"),
				},
				Peers: []Peer{{
					PublicKey:  mustKey(bobPub),
					AllowedIPs: prefixes("100.64.0.0/24", "10.9.0.2/32", "fd00::2/128", "fd00:1::/48"),
					Endpoint:   "198.51.100.7:51820",
				}},
			},
		},
		{
			name: "IPv6",
			conf: `[Interface]
PrivateKey = {alice}
Address = fd7a:115c:a1e0::1/48
MTU = 1280
[Peer]
PublicKey = {bob}
AllowedIPs = ::/0
Endpoint = [2001:db8::1]:51820
`,
			want: &Config{
				Interface: Interface{
					PrivateKey: key.Private(mustKey(alicePriv)),
					Addresses:  prefixes("fd7a:115c:a1e0::1/48"),
					MTU:        1280,
				},
				Peers: []Peer{{
					PublicKey:  mustKey(bobPub),
					AllowedIPs: prefixes("::/0"),
					Endpoint:   "[2001:db8::1]:51820",
				}},
			},
		},
		{
			name: "rendezvous only",
			conf: `[Interface]
PrivateKey = {alice}
ListenPort = 0
FwMark = 0xca6c
Rendezvous = rv.example.com:3478, 203.0.113.10:3478
RendezvousKey = {rv}
RendezvousKey = {rv2}
[Peer]
Name = bob
PublicKey = {bob}
PresharedKey = {psk}
[Peer]
PublicKey = {carol}
Endpoint = carol.example.net.:443
PersistentKeepalive = 0
`,
			want: &Config{
				Interface: Interface{
					PrivateKey:    key.Private(mustKey(alicePriv)),
					Rendezvous:    []string{"rv.example.com:3478", "203.0.113.10:3478"},
					RendezvousKey: []key.Key{mustKey(rvPub), mustKey(rv2Pub)},
					FwMark:        0xca6c,
				},
				Peers: []Peer{
					{Name: "bob", PublicKey: mustKey(bobPub), PresharedKey: mustKey(psk)},
					{PublicKey: mustKey(carolPub), Endpoint: "carol.example.net.:443"},
				},
			},
		},
		{
			name: "no peers, FwMark off",
			conf: "[Interface]\nPrivateKey = {alice}\nFwMark = off\nListenPort = 65535\nMTU = 65535",
			want: &Config{
				Interface: Interface{
					PrivateKey: key.Private(mustKey(alicePriv)),
					ListenPort: 65535,
					MTU:        65535,
				},
			},
		},
		{
			name: "small MTU without IPv6",
			conf: "[Interface]\nPrivateKey = {alice}\nAddress = 100.64.0.1/24\nMTU = 576\nFwMark = 51820",
			want: &Config{
				Interface: Interface{
					PrivateKey: key.Private(mustKey(alicePriv)),
					Addresses:  prefixes("100.64.0.1/24"),
					MTU:        576,
					FwMark:     51820,
				},
			},
		},
		{
			name: "port mapping",
			conf: "[Interface]\nPrivateKey = {alice}\nPortMapping = PCP",
			want: &Config{
				Interface: Interface{
					PrivateKey:  key.Private(mustKey(alicePriv)),
					PortMapping: "pcp",
				},
			},
		},
		{
			name: "no local candidates",
			conf: "[Interface]\nPrivateKey = {alice}\nLocalCandidates = false",
			want: &Config{
				Interface: Interface{
					PrivateKey:        key.Private(mustKey(alicePriv)),
					NoLocalCandidates: true,
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("punch0.conf", strings.NewReader(expand(tt.conf)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Interface, tt.want.Interface) || !reflect.DeepEqual(got.Peers, tt.want.Peers) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate of parsed config: %v", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	good := func() *Config {
		return &Config{
			Interface: Interface{PrivateKey: key.Private(mustKey(alicePriv))},
			Peers:     []Peer{{PublicKey: mustKey(bobPub), Endpoint: "198.51.100.7:51820"}},
		}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name   string
		modify func(*Config)
		key    string
	}{
		{"no private key", func(c *Config) { c.Interface.PrivateKey = key.Private{} }, "PrivateKey"},
		{"no public key", func(c *Config) { c.Peers[0].PublicKey = key.Key{} }, "PublicKey"},
		{"self", func(c *Config) { c.Peers[0].PublicKey = mustKey(alicePub) }, "PublicKey"},
		{"duplicate peer", func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }, "PublicKey"},
		{"AllowedIPs of another peer", func(c *Config) {
			c.Peers[0].AllowedIPs = prefixes("100.64.0.2/32")
			c.Peers = append(c.Peers, Peer{PublicKey: mustKey(carolPub), Endpoint: "198.51.100.8:1", AllowedIPs: prefixes("100.64.0.2/32")})
		}, "AllowedIPs"},
		{"no endpoint", func(c *Config) { c.Peers[0].Endpoint = "" }, "Endpoint"},
		{"bad endpoint", func(c *Config) { c.Peers[0].Endpoint = "198.51.100.7" }, "Endpoint"},
		{"MTU", func(c *Config) { c.Interface.MTU = 100 }, "MTU"},
		{"MTU IPv6", func(c *Config) {
			c.Interface.MTU = 1000
			c.Interface.Addresses = prefixes("fd00::1/64")
		}, "MTU"},
		{"invalid Address", func(c *Config) { c.Interface.Addresses = []netip.Prefix{{}} }, "Address"},
		{"invalid AllowedIPs", func(c *Config) { c.Peers[0].AllowedIPs = []netip.Prefix{{}} }, "AllowedIPs"},
		{"Rendezvous without key", func(c *Config) { c.Interface.Rendezvous = []string{"203.0.113.10:3478"} }, "RendezvousKey"},
		{"bad Rendezvous", func(c *Config) {
			c.Interface.Rendezvous = []string{"203.0.113.10"}
			c.Interface.RendezvousKey = []key.Key{mustKey(rvPub)}
		}, "Rendezvous"},
		{"zero RendezvousKey", func(c *Config) {
			c.Interface.Rendezvous = []string{"203.0.113.10:3478"}
			c.Interface.RendezvousKey = []key.Key{{}}
		}, "RendezvousKey"},
	}
	for _, tt := range tests {
		c := good()
		tt.modify(c)
		err := c.Validate()
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: Validate = %v, want *Error", tt.name, err)
			continue
		}
		if e.Key != tt.key || e.Line != 0 || e.File != "" {
			t.Errorf("%s: Validate = %#v, want key %q and no position", tt.name, e, tt.key)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "punch0.conf")
	if err := os.WriteFile(path, []byte(expand(example)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Peers) != 1 || c.Peers[0].Name != "bob" {
		t.Errorf("Load: got %+v", c)
	}

	if err := os.WriteFile(path, []byte(expand(example)+"Bogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if want := path + ":15: Bogus: unknown key"; err == nil || err.Error() != want {
		t.Errorf("Load: error %v, want %s", err, want)
	}

	missing := filepath.Join(dir, "missing.conf")
	_, err = Load(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load of missing file: error %v, want ErrNotExist naming the path", err)
	}
}

func FuzzParse(f *testing.F) {
	seeds := []string{
		example,
		"[Interface]\nPrivateKey = {alice}\nRendezvous = a:1\nRendezvousKey = {rv}\n[Peer]\nPublicKey = {bob}\n",
		"[Interface]\nPrivateKey = {alice}\nAddress = fd00::1/64, 10.0.0.1\nMTU = 1280\n[Peer]\nPublicKey = {bob}\nEndpoint = [2001:db8::1]:51820\nAllowedIPs = ::/0\n",
		"[Interface]\nPrivateKey = {alice}\n[Peer]\nPublicKey = {alicepub}\nEndpoint = a:1\n",
		"[Interface]\nPrivateKey = {alice}\n[Peer]\nPublicKey = {bob}\n",
		"[Interface]\n{alice}\n",
		"[Interface]\nPrivateKey = {alice}\nPrivateKey = {alice}\n",
		"[Interface]\nAddress = 100.64.0.1/33\n",
		"[Interface]\nFwMark = 0x\nDNS = 1.1.1.1\n",
		"[Peer]\nEndpoint = [::1%eth0]:1\n",
		"[\n]\n[]\n=\n#\n",
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(expand(s)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.conf", bytes.NewReader(data))
		if err != nil {
			if c != nil {
				t.Fatalf("config and error %v", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %q is not *Error", err, err)
			}
			if e.Line < 0 || e.Line > bytes.Count(data, []byte("\n"))+1 {
				t.Fatalf("error %q: line out of range", err)
			}
			// No key found in the input may appear in the error.
			msg := err.Error()
			for i := 0; i+44 <= len(data); i++ {
				if k, err := key.Parse(string(data[i : i+44])); err == nil && !k.IsZero() && strings.Contains(msg, k.String()) {
					t.Fatalf("error %q contains key %s from the input", msg, k)
				}
			}
			return
		}
		if c.Interface.PrivateKey.IsZero() {
			t.Fatal("accepted config without PrivateKey")
		}
		for i, p := range c.Peers {
			if p.PublicKey.IsZero() {
				t.Fatalf("accepted peer %d without PublicKey", i)
			}
			if p.Endpoint == "" && len(c.Interface.Rendezvous) == 0 {
				t.Fatalf("accepted peer %d without Endpoint or Rendezvous", i)
			}
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate of parsed config: %v", err)
		}
	})
}

// TestWgQuickKeys: the wg-quick keys of a typical server config parse as
// wg-quick reads them: hooks repeat in order, '#' ends the line, DNS
// splits into resolvers and search domains.
func TestWgQuickKeys(t *testing.T) {
	conf := expand("[Interface]\nPrivateKey = {alice}\nAddress = 100.64.0.1/24\n" +
		"PreUp = echo %i >/tmp/x\n" +
		"PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE # comment\n" +
		"PostUp = sysctl -w net.ipv4.ip_forward=1\n" +
		"PreDown = true\nPostDown = iptables -D FORWARD -i %i -j ACCEPT\n" +
		"Table = 1234\nSaveConfig = false\nDNS = 100.64.0.1, 2001:db8::53, punch, corp.example\n" +
		"[Peer]\nPublicKey = {bob}\nEndpoint = 198.51.100.7:51820\n")
	c, err := Parse("wg0.conf", strings.NewReader(conf))
	if err != nil {
		t.Fatal(err)
	}
	in := c.Interface
	wantUp := []string{"iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE", "sysctl -w net.ipv4.ip_forward=1"}
	if !slices.Equal(in.PostUp, wantUp) || !slices.Equal(in.PreUp, []string{"echo %i >/tmp/x"}) ||
		!slices.Equal(in.PreDown, []string{"true"}) || len(in.PostDown) != 1 {
		t.Fatalf("hooks: PreUp %q PostUp %q PreDown %q PostDown %q", in.PreUp, in.PostUp, in.PreDown, in.PostDown)
	}
	if in.Table != "1234" {
		t.Fatalf("Table %q", in.Table)
	}
	if fmt.Sprint(in.DNS) != "[100.64.0.1 2001:db8::53]" || !slices.Equal(in.DNSSearch, []string{"punch", "corp.example"}) {
		t.Fatalf("DNS %v search %q", in.DNS, in.DNSSearch)
	}
	if err := c.KeyError("Table", "cannot change"); err.Error() != "wg0.conf:9: Table: cannot change" {
		t.Fatalf("KeyError: %v", err)
	}
}
