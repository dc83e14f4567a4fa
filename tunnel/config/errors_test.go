package config

// What a bad file gets: an error naming the file, line and key, and
// never the key material.

import (
	"errors"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	// ok is a valid file to which the cases below append lines: the
	// [Interface] header is on line 1, the [Peer] header on line 4.
	const ok = "[Interface]\nPrivateKey = {alice}\nAddress = 100.64.0.1/24\n" +
		"[Peer]\nPublicKey = {bob}\nEndpoint = 198.51.100.7:51820\n"
	tests := []struct {
		name string
		conf string
		line int
		key  string
		msg  string // substring of the message
	}{
		{"unknown section", ok + "[Peers]\n", 7, "", `unknown section "[Peers]"`},
		{"empty section", ok + "[]\n", 7, "", "unknown section"},
		{"key outside section", "PrivateKey = {alice}\n[Interface]\n", 1, "PrivateKey", "outside any section"},
		{"unknown key outside section", "\nFoo = 1\n", 2, "Foo", "outside any section"},
		{"no equals sign", ok + "Endpoint\n", 7, "", "expected Key = Value"},
		{"lone bracket", ok + "[\n", 7, "", "expected Key = Value"},
		{"empty key", ok + " = 1\n", 7, "", "expected Key = Value"},
		{"DNS garbage", "[Interface]\nDNS = 1.1.1.1, not a name!\n", 2, "DNS", `"not a name!" is neither an IP address nor a domain name`},
		{"Table garbage", "[Interface]\ntable = 1 2\n", 2, "Table", "must be auto, off, or a routing table's number or name"},
		{"SaveConfig true", "[Interface]\nSaveConfig = true\n", 2, "SaveConfig", "true is not supported: punchtun never rewrites its config file"},
		{"SaveConfig garbage", "[Interface]\nSaveConfig = maybe\n", 2, "SaveConfig", "must be true or false"},
		{"PostUp in peer", ok + "PostUp = true\n", 7, "PostUp", "belongs in [Interface]"},
		{"unknown key", ok + "Foo = bar\n", 7, "Foo", "unknown key"},
		{"DNS in peer", ok + "DNS = 1.1.1.1\n", 7, "DNS", "unknown key"},
		{"peer key in interface", "[Interface]\nEndpoint = 198.51.100.7:1\n", 2, "Endpoint", "belongs in [Peer]"},
		{"interface key in peer", ok + "listenport = 1\n", 7, "ListenPort", "belongs in [Interface]"},
		{"duplicate Interface", ok + "[interface]\n", 7, "", "duplicate [Interface] section; the first is on line 1"},

		{"PrivateKey bad base64", "[Interface]\nPrivateKey = KNgGyX8OAK8aH8Myj6djqSaXI8jbj6xPk69x2xhtbl!=\n", 2, "PrivateKey", "invalid base64"},
		{"PrivateKey short", "[Interface]\nPrivateKey = KNgGyX8OAK8aH8Myj6djqSaXI8jbj6xPk69x2x==\n", 2, "PrivateKey", "must be 44 base64 characters"},
		{"PrivateKey zero", "[Interface]\nPrivateKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 2, "PrivateKey", "all zeros"},
		{"PrivateKey empty", "[Interface]\nPrivateKey =\n", 2, "PrivateKey", "must be 44 base64 characters, got 0"},
		{"PublicKey bad", ok + "[Peer]\nPublicKey = wLEmtaoTS4TmRiUla43olzeHYSsfODnSxgUm0hFOiG0\n", 8, "PublicKey", "must be 44"},
		{"PresharedKey bad", ok + "PresharedKey = nope\n", 7, "PresharedKey", "must be 44"},
		{"RendezvousKey bad", "[Interface]\nRendezvous = 203.0.113.10:3478\nRendezvousKey = {rv}x\n", 3, "RendezvousKey", "must be 44"},

		{"Address /33", "[Interface]\nAddress = 100.64.0.1/24, 100.64.0.1/33\n", 2, "Address", `bad CIDR "100.64.0.1/33": prefix length out of range`},
		{"Address garbage", "[Interface]\nAddress = 100.64.0\n", 2, "Address", `bad CIDR "100.64.0": IPv4 address too short`},
		{"Address bad addr in prefix", "[Interface]\nAddress = 100.64.0/24\n", 2, "Address", `bad CIDR "100.64.0/24": IPv4 address too short`},
		{"Address zone", "[Interface]\nAddress = fe80::1%eth0\n", 2, "Address", "zone"},
		{"AllowedIPs /33", ok + "AllowedIPs = 100.64.0.2/33\n", 7, "AllowedIPs", `bad CIDR "100.64.0.2/33": prefix length out of range`},
		{"AllowedIPs second line", ok + "AllowedIPs = 100.64.0.2/32\nAllowedIPs = 10.0.0.0/8, ::/129\n", 8, "AllowedIPs", `bad CIDR "::/129"`},

		{"ListenPort too big", "[Interface]\nListenPort = 65536\n", 2, "ListenPort", `must be 0..65535, got "65536"`},
		{"ListenPort negative", "[Interface]\nListenPort = -1\n", 2, "ListenPort", "must be 0..65535"},
		{"ListenPort text", "[Interface]\nListenPort = any\n", 2, "ListenPort", "must be 0..65535"},
		{"MTU too small", "[Interface]\nMTU = 575\n", 2, "MTU", `must be 576..65535, got "575"`},
		{"MTU too big", "[Interface]\nMTU = 65536\n", 2, "MTU", "must be 576..65535"},
		{"MTU zero", "[Interface]\nMTU = 0\n", 2, "MTU", "must be 576..65535"},
		{"MTU IPv6", "[Interface]\nPrivateKey = {alice}\nMTU = 1279\nAddress = 100.64.0.1/24, fd00::1/64\n", 3, "MTU", "must be 1280..65535 with an IPv6 Address"},
		{"FwMark bad", "[Interface]\nFwMark = 0x\n", 2, "FwMark", "32-bit"},
		{"FwMark too big", "[Interface]\nFwMark = 0x100000000\n", 2, "FwMark", "32-bit"},
		{"LocalCandidates not a boolean", "[Interface]\nLocalCandidates = lan\n", 2, "LocalCandidates", `must be true or false, got "lan"`},
		{"PortMapping unknown", "[Interface]\nPortMapping = igd\n", 2, "PortMapping", `must be auto, off, natpmp, pcp or upnp, got "igd"`},

		{"Endpoint no port", ok + "[Peer]\nPublicKey = {carol}\nEndpoint = 198.51.100.7\n", 9, "Endpoint", "missing port"},
		{"Endpoint port 0", ok + "[Peer]\nPublicKey = {carol}\nEndpoint = 198.51.100.7:0\n", 9, "Endpoint", "port must be 1..65535"},
		{"Endpoint port too big", ok + "[Peer]\nPublicKey = {carol}\nEndpoint = 198.51.100.7:65536\n", 9, "Endpoint", "port must be 1..65535"},
		{"Endpoint named port", ok + "[Peer]\nPublicKey = {carol}\nEndpoint = example.com:wireguard\n", 9, "Endpoint", "port must be 1..65535"},
		{"Endpoint no host", ok + "[Peer]\nPublicKey = {carol}\nEndpoint = :51820\n", 9, "Endpoint", "missing host"},
		{"Endpoint IPv6 unbracketed", ok + "[Peer]\nPublicKey = {carol}\nEndpoint = 2001:db8::1:51820\n", 9, "Endpoint", "too many colons"},
		{"Endpoint brackets not IPv6", ok + "[Peer]\nPublicKey = {carol}\nEndpoint = [example.com]:51820\n", 9, "Endpoint", "only an IPv6 address"},
		{"Endpoint bad IPv4", ok + "[Peer]\nPublicKey = {carol}\nEndpoint = 198.51.100:51820\n", 9, "Endpoint", "IP address or a DNS name"},
		{"Endpoint bad name", ok + "[Peer]\nPublicKey = {carol}\nEndpoint = my host:51820\n", 9, "Endpoint", "IP address or a DNS name"},
		{"Endpoint empty", ok + "[Peer]\nPublicKey = {carol}\nEndpoint =\n", 9, "Endpoint", "bad host:port"},
		{"PersistentKeepalive too big", ok + "PersistentKeepalive = 65536\n", 7, "PersistentKeepalive", "must be 0..65535 or off"},
		{"PersistentKeepalive on", ok + "PersistentKeepalive = on\n", 7, "PersistentKeepalive", "must be 0..65535 or off"},

		{"duplicate PrivateKey", "[Interface]\nPrivateKey = {alice}\n\nprivatekey = {alice}\n", 4, "PrivateKey", "duplicate key; already set on line 2"},
		{"duplicate ListenPort", "[Interface]\nListenPort = 1\nListenPort = 1\n", 3, "ListenPort", "duplicate key"},
		{"duplicate Endpoint", ok + "Endpoint = 198.51.100.8:51820\n", 7, "Endpoint", "duplicate key; already set on line 6"},
		{"duplicate Name", ok + "Name = a\nName = b\n", 8, "Name", "duplicate key"},

		{"missing PrivateKey", "# no key\n[Interface]\nAddress = 100.64.0.1/24\n", 2, "PrivateKey", "missing in [Interface]"},
		{"missing Interface", "[Peer]\nPublicKey = {bob}\nEndpoint = 198.51.100.7:51820\n", 0, "", "missing [Interface] section"},
		{"empty file", "", 0, "", "missing [Interface] section"},
		{"missing PublicKey", ok + "\n[Peer]\nEndpoint = 198.51.100.8:51820\n", 8, "PublicKey", "missing in [Peer]"},
		{"duplicate peer", ok + "[Peer]\nPublicKey = {carol}\nEndpoint = 198.51.100.8:1\n[Peer]\nEndpoint = 198.51.100.9:1\nPublicKey = {bob}\n", 12, "PublicKey", "same PublicKey as the [Peer] on line 4"},
		{"AllowedIPs of another peer", ok + "AllowedIPs = 100.64.0.2/32\n[Peer]\nPublicKey = {carol}\nEndpoint = 198.51.100.8:1\nAllowedIPs = 10.0.0.0/8, 100.64.0.2/32\n", 11, "AllowedIPs", "100.64.0.2/32 is already routed to the [Peer] on line 4 (AllowedIPs on line 7)"},
		{"AllowedIPs of another peer, unmasked", ok + "AllowedIPs = 100.64.0.2/32\n[Peer]\nPublicKey = {carol}\nEndpoint = 198.51.100.8:1\nAllowedIPs = 100.64.0.2\n", 11, "AllowedIPs", "already routed to the [Peer] on line 4"},
		{"peer is self", ok + "[Peer]\nPublicKey = {alicepub}\nEndpoint = 198.51.100.8:1\n", 8, "PublicKey", "interface's own public key"},
		{"peer without Endpoint", ok + "[Peer]\nPublicKey = {carol}\n", 7, "Endpoint", "peer has no Endpoint and no Rendezvous is set"},
		{"Interface after peers", "[Peer]\nPublicKey = {bob}\n[Interface]\nPrivateKey = {alice}\n", 1, "Endpoint", "no Rendezvous"},
		{"Rendezvous without key", "[Interface]\nPrivateKey = {alice}\nRendezvous = 203.0.113.10:3478\n", 3, "RendezvousKey", "1 Rendezvous but 0 RendezvousKey"},
		{"RendezvousKey without Rendezvous", "[Interface]\nPrivateKey = {alice}\nRendezvousKey = {rv}\n", 3, "RendezvousKey", "0 Rendezvous but 1 RendezvousKey"},
		{"Rendezvous count", "[Interface]\nPrivateKey = {alice}\nRendezvous = 203.0.113.10:3478\nRendezvousKey = {rv}\nRendezvous = 203.0.113.11:3478\n", 4, "RendezvousKey", "2 Rendezvous but 1 RendezvousKey"},
		{"Rendezvous not host:port", "[Interface]\nPrivateKey = {alice}\nRendezvous = 203.0.113.10:3478, 203.0.113.11\n", 3, "Rendezvous", `bad host:port "203.0.113.11"`},
		{"RendezvousKey zero", "[Interface]\nRendezvousKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 2, "RendezvousKey", "all zeros"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("punch0.conf", strings.NewReader(expand(tt.conf)))
			if err == nil {
				t.Fatalf("no error; got %+v", c)
			}
			if c != nil {
				t.Errorf("got config %+v with error", c)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %q is not *Error", err, err)
			}
			if e.File != "punch0.conf" || e.Line != tt.line || e.Key != tt.key {
				t.Errorf("error %q: at %s:%d key %q, want punch0.conf:%d key %q",
					err, e.File, e.Line, e.Key, tt.line, tt.key)
			}
			if !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("error %q: message does not contain %q", err, tt.msg)
			}
			if strings.Contains(err.Error(), alicePriv) {
				t.Errorf("error %q contains the private key", err)
			}
		})
	}
}

// TestNoKeyInErrors checks that a private key that lands where it does
// not belong is not repeated in the error, and hence not in a log.
func TestNoKeyInErrors(t *testing.T) {
	secret := alicePriv[:len(alicePriv)-1] // also catch a partial echo
	for _, conf := range []string{
		"[Interface]\n{alice}\n",
		"[Interface]\nPrivateKey =\n{alice}\n",
		"[Interface]\n{alice} = x\n",
		"{alice}\n",
		"[{alice}]\n",
		"[Interface]\nAddress = {alice}\n",
		"[Interface]\nAddress = 100.64.0.1/24,{alice}\n",
		"[Interface]\nAddress = {alice}/24\n",
		"[Interface]\nAddress = 100.64.0.1/{alice}\n",
		"[Interface]\nListenPort = {alice}\n",
		"[Interface]\nMTU = {alice}\n",
		"[Interface]\nFwMark = {alice}\n",
		"[Interface]\nRendezvous = {alice}\n",
		"[Interface]\nRendezvous = {alice}:1\n",
		"[Interface]\nRendezvousKey = {alice}x\n",
		"[Interface]\nPrivateKey = {alice}{alice}\n",
		"[Interface]\nPrivateKey = x{alice}\n",
		"[Peer]\nEndpoint = {alice}\n",
		"[Peer]\nEndpoint = [{alice}]:1\n",
		"[Peer]\nPersistentKeepalive = {alice}\n",
		"[Peer]\nAllowedIPs = {alice}\n",
		"[Peer]\nPresharedKey = {alice}=\n",
	} {
		conf = expand(conf)
		_, err := Parse("punch0.conf", strings.NewReader(conf))
		if err == nil {
			t.Errorf("Parse(%q): no error", conf)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Parse(%q): error %q contains the key", conf, err)
		}
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{"punch0.conf", 7, "AllowedIPs", "bad CIDR"}, "punch0.conf:7: AllowedIPs: bad CIDR"},
		{Error{"punch0.conf", 0, "", "missing [Interface] section"}, "punch0.conf: missing [Interface] section"},
		{Error{"punch0.conf", 3, "", "expected Key = Value"}, "punch0.conf:3: expected Key = Value"},
		{Error{"punch0.conf", 0, "PrivateKey", "missing"}, "punch0.conf: PrivateKey: missing"},
		{Error{"", 0, "PrivateKey", "missing"}, "PrivateKey: missing"},
		{Error{"", 2, "", "x"}, "line 2: x"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestParseReadError(t *testing.T) {
	_, err := Parse("punch0.conf", errReader{})
	if err == nil || err.Error() != "punch0.conf: disk on fire" {
		t.Errorf("Parse: error %v, want punch0.conf: disk on fire", err)
	}
}
