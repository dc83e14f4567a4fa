package userspace

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
)

func TestReadRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		cmd  byte
		dst  string
		err  bool
	}{
		{"ipv4", []byte{5, 1, 0, 1, 100, 64, 0, 2, 0, 22}, cmdConnect, "100.64.0.2:22", false},
		{"ipv6", append(append([]byte{5, 3, 0, 4}, netip.MustParseAddr("fd00::2").AsSlice()...), 0, 53), cmdUDPAssociate, "[fd00::2]:53", false},
		{"name", append(append([]byte{5, 1, 0, 3, 9}, "bob.punch"...), 1, 0), cmdConnect, "bob.punch:256", false},
		{"v4-mapped is IPv4", append(append([]byte{5, 1, 0, 4}, netip.MustParseAddr("::ffff:10.0.0.1").AsSlice()...), 0, 80), cmdConnect, "10.0.0.1:80", false},
		{"version 4", []byte{4, 1, 0, 1, 1, 2, 3, 4, 0, 80}, 0, "", true},
		{"short address", []byte{5, 1, 0, 1, 1, 2}, 0, "", true},
		{"empty name", []byte{5, 1, 0, 3, 0, 0, 80}, 0, "", true},
		{"name cut short", []byte{5, 1, 0, 3, 10, 'a'}, 0, "", true},
		{"unknown type", []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, 0, "", true},
		{"nothing", nil, 0, "", true},
	} {
		cmd, dst, err := readRequest(bufio.NewReader(bytes.NewReader(tc.in)))
		if (err != nil) != tc.err || err == nil && (cmd != tc.cmd || dst.String() != tc.dst) {
			t.Errorf("%s: cmd %d, dst %s, err %v", tc.name, cmd, dst, err)
		}
	}
	_, _, err := readRequest(bufio.NewReader(bytes.NewReader([]byte{5, 1, 0, 7})))
	if !errors.Is(err, errAddressType) {
		t.Errorf("unknown address type: %v, want errAddressType (reply 8)", err)
	}
}

func TestGreet(t *testing.T) {
	var out bytes.Buffer
	if err := greet(bufio.NewReader(bytes.NewReader([]byte{5, 2, 2, 0})), &out); err != nil || !bytes.Equal(out.Bytes(), []byte{5, 0}) {
		t.Errorf("methods 2, 0: %v, wrote %v", err, out.Bytes())
	}
	out.Reset()
	if err := greet(bufio.NewReader(bytes.NewReader([]byte{5, 1, 2})), &out); err == nil || !bytes.Equal(out.Bytes(), []byte{5, 0xff}) {
		t.Errorf("password only: %v, wrote %v (want no acceptable method)", err, out.Bytes())
	}
	if err := greet(bufio.NewReader(bytes.NewReader([]byte{5, 3, 0})), io.Discard); err == nil {
		t.Error("a greeting cut short was taken")
	}
}

func TestDatagram(t *testing.T) {
	b := appendAddr([]byte{0, 0, 0}, netip.MustParseAddrPort("100.64.0.2:53"))
	dst, payload, err := parseDatagram(append(b, "query"...))
	if err != nil || dst.String() != "100.64.0.2:53" || string(payload) != "query" {
		t.Errorf("datagram: %s %q %v", dst, payload, err)
	}
	frag := append([]byte{0, 0, 1}, b[3:]...)
	if _, _, err := parseDatagram(frag); err == nil {
		t.Error("a fragment was taken")
	}
	for n := range len(b) {
		if _, _, err := parseDatagram(b[:n]); err == nil {
			t.Errorf("a datagram cut to %d bytes was taken", n)
		}
	}
}

// The parsers take whatever a client sends: no panic, no read past what
// was sent, and what they accept they can write back the same.
func FuzzReadRequest(f *testing.F) {
	f.Add([]byte{5, 1, 0, 1, 100, 64, 0, 2, 0, 22})
	f.Add(append([]byte{5, 1, 0, 3, 3}, "bob\x00\x16"...))
	f.Add([]byte{5, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 53})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		_, dst, err := readRequest(r)
		if err != nil {
			return
		}
		if a, err := netip.ParseAddr(dst.host); err == nil {
			back := appendAddr(nil, netip.AddrPortFrom(a, dst.port))
			again, err := readAddr(bytes.NewReader(back))
			if err != nil || again != dst {
				t.Fatalf("%v written back as %v read as %v (%v)", dst, back, again, err)
			}
		}
	})
}

func FuzzParseDatagram(f *testing.F) {
	f.Add(append(appendAddr([]byte{0, 0, 0}, netip.MustParseAddrPort("100.64.0.2:53")), "q"...))
	f.Fuzz(func(t *testing.T, in []byte) {
		_, payload, err := parseDatagram(in)
		if err == nil && len(payload) > len(in) {
			t.Fatal("payload longer than the datagram")
		}
	})
}
