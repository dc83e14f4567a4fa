package wire

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

func newKey(t testing.TB) key.Private {
	k, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var samples = []Body{
	&Register{Time: 1, NAT: 2, Candidates: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.2:51820"), netip.MustParseAddrPort("[2001:db8::1]:51820")}, Wants: []key.Key{{1}, {2}}},
	&Register{Time: 2},
	&RegisterAck{Time: 3, Observed: netip.MustParseAddrPort("203.0.113.21:40000"), Flags: AckRelay},
	&Query{Time: 4, Peer: key.Key{9}},
	&Intro{Time: 5, Peer: key.Key{7}, Observed: netip.MustParseAddrPort("203.0.113.22:1"), NAT: 3, Candidates: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:2")}},
	&Deregister{Time: 6},
	&Ping{TxID: [12]byte{1, 2, 3}},
	&Pong{TxID: [12]byte{4}, Src: netip.MustParseAddrPort("[2001:db8::2]:9")},
	&TURNOffer{Time: 7, Expires: 1764500000, Username: "1764500000:punchtun", Password: "c2VjcmV0",
		URIs: []string{"turn:relay1.example:3478", "turns:relay1.example:443?transport=tcp"}},
	&TURNOffer{Time: 8},
	&Relayed{Time: 9, Peer: key.Key{3}, Addr: netip.MustParseAddrPort("203.0.113.20:49152")},
	&Relayed{Time: 10, Peer: key.Key{4}},
	&Register{Time: 11, Wants: []key.Key{{1}}, Network: [32]byte{5}, Cert: bytes.Repeat([]byte{0xc}, 200)},
	&Intro{Time: 12, Peer: key.Key{7}, Observed: netip.MustParseAddrPort("203.0.113.22:1"), Cert: []byte{1}},
	&Lookup{Time: 13, Addr: netip.MustParseAddr("100.64.0.7")},
	&Lookup{Time: 14, Addr: netip.MustParseAddr("fd00::7")},
	&Lookup{Time: 15, Name: "m7"},
	&LookupMiss{Time: 16, Addr: netip.MustParseAddr("100.64.0.9")},
	&LookupMiss{Time: 17, Name: "nobody"},
	&Refused{Time: 18, Reason: 3},
	&Register{Time: 19, Network: [32]byte{5}, Cert: []byte{1}, Docs: &cert.Summary{PolicySeq: 9, Digest: [16]byte{3}}},
	&RegisterAck{Time: 20, Observed: netip.MustParseAddrPort("203.0.113.21:40000"), Docs: &cert.Summary{PolicySeq: 1}},
	&Publish{Time: 21, Doc: bytes.Repeat([]byte{'P'}, 300)},
	&Document{Time: 22, Doc: []byte{'R'}},
}

func TestSealOpenRoundTrip(t *testing.T) {
	a, b := newKey(t), newKey(t)
	ab, ba := NewSharedKey(a, b.Public()), NewSharedKey(b, a.Public())
	for _, m := range samples {
		pkt := Seal(nil, m.Type(), a.Public(), &ab, m.Append(nil))
		if !IsControl(pkt) {
			t.Fatalf("%v: sealed packet lacks magic", m.Type())
		}
		h, err := ParseHeader(pkt)
		if err != nil || h.Type != m.Type() || h.Sender != a.Public() {
			t.Fatalf("%v: header %+v, %v", m.Type(), h, err)
		}
		plain, err := Open(pkt, &ba)
		if err != nil {
			t.Fatalf("%v: open: %v", m.Type(), err)
		}
		got, err := Parse(h.Type, plain)
		if err != nil {
			t.Fatalf("%v: parse: %v", m.Type(), err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(m)) {
			t.Errorf("%v: got %+v, want %+v", m.Type(), got, m)
		}
	}
}

// normalize makes nil and empty slices compare equal.
func normalize(b Body) Body {
	switch m := b.(type) {
	case *Register:
		c := *m
		if len(c.Candidates) == 0 {
			c.Candidates = nil
		}
		if len(c.Wants) == 0 {
			c.Wants = nil
		}
		return &c
	}
	return b
}

func TestOpenRejectsWrongKeyAndTampering(t *testing.T) {
	a, b, eve := newKey(t), newKey(t), newKey(t)
	ab := NewSharedKey(a, b.Public())
	pkt := Seal(nil, TypePing, a.Public(), &ab, (&Ping{}).Append(nil))

	eb := NewSharedKey(eve, b.Public())
	if _, err := Open(pkt, &eb); err != ErrAuth {
		t.Errorf("opened with a third party's key: %v", err)
	}
	ba := NewSharedKey(b, a.Public())
	for i := headerLen - 24; i < len(pkt); i++ {
		bad := bytes.Clone(pkt)
		bad[i] ^= 1
		if _, err := Open(bad, &ba); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	if _, err := Open(pkt[:headerLen+3], &ba); err != ErrShort {
		t.Errorf("truncated packet: %v", err)
	}
}

func TestParseRejectsBadBodies(t *testing.T) {
	for _, m := range samples {
		body := m.Append(nil)
		if _, err := Parse(m.Type(), body[:len(body)-1]); err == nil {
			t.Errorf("%v: truncated body accepted", m.Type())
		}
		// Where a certificate or a summary may follow, a byte after the
		// body starts it: short, not trailing.
		want := ErrTrailing
		switch b := m.(type) {
		case *Register:
			if b.Cert == nil || b.Docs == nil {
				want = ErrShort
			}
		case *RegisterAck:
			if b.Docs == nil {
				want = ErrShort
			}
		case *Intro:
			if b.Cert == nil {
				want = ErrShort
			}
		}
		if _, err := Parse(m.Type(), append(body, 0)); err != want {
			t.Errorf("%v: trailing byte: %v, want %v", m.Type(), err, want)
		}
	}
	tooMany := []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, MaxCandidates + 1}
	if _, err := Parse(TypeRegister, tooMany); err != ErrTooMany {
		t.Errorf("too many candidates: %v", err)
	}
	reg := (&Register{Time: 1}).Append(nil)
	for _, n := range []int{0, MaxCert + 1} {
		tail := append(append(bytes.Clone(reg), make([]byte, 32)...), byte(n>>8), byte(n))
		if _, err := Parse(TypeRegister, append(tail, make([]byte, n)...)); err == nil {
			t.Errorf("certificate of %d bytes accepted", n)
		}
	}
	for _, bad := range [][]byte{
		{0, 0, 0, 0, 0, 0, 0, 1, 3},                                             // unknown kind
		{0, 0, 0, 0, 0, 0, 0, 1, LookupName, 0},                                 // empty name
		{0, 0, 0, 0, 0, 0, 0, 1, LookupName, 64},                                // name too long (and short)
		append([]byte{0, 0, 0, 0, 0, 0, 0, 1, LookupAddr}, make([]byte, 16)...), // ::
	} {
		if _, err := Parse(TypeLookup, bad); err == nil {
			t.Errorf("lookup %x accepted", bad)
		}
	}
	if _, err := Parse(Type(99), nil); err == nil {
		t.Error("unknown type accepted")
	}
}

func TestClockStrictlyIncreases(t *testing.T) {
	var c Clock
	if a, b := c.Next(100), c.Next(100); b <= a {
		t.Errorf("same instant: %d then %d", a, b)
	}
	if a, b := c.Next(200), c.Next(150); b <= a {
		t.Errorf("clock stepped back: %d then %d", a, b)
	}
}

func FuzzParse(f *testing.F) {
	for _, m := range samples {
		f.Add(byte(m.Type()), m.Append(nil))
	}
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		m, err := Parse(Type(typ), body)
		if err != nil {
			return
		}
		// What parses re-encodes to the same bytes.
		if got := m.Append(nil); !bytes.Equal(got, body) {
			t.Fatalf("%v: re-encoded %x, was %x", m.Type(), got, body)
		}
	})
}

func TestRelayFrame(t *testing.T) {
	pkt := []byte{4, 0, 0, 0, 1, 2, 3}
	frame := AppendRelay(nil, key.Key{5}, pkt)
	if !IsRelay(frame) || IsControl(frame) || len(frame) != RelayHeaderLen+len(pkt) {
		t.Fatalf("frame %x", frame)
	}
	if k, got, err := ParseRelay(frame); err != nil || k != (key.Key{5}) || !bytes.Equal(got, pkt) {
		t.Fatalf("parsed %v %x", k, got)
	}
	for n := range RelayHeaderLen {
		if _, _, err := ParseRelay(frame[:n]); err != ErrShortRelay {
			t.Fatalf("ParseRelay of %d bytes: %v, want ErrShortRelay", n, err)
		}
	}
	if IsRelay(frame[:RelayHeaderLen-1]) {
		t.Error("short frame taken for a relay frame")
	}
}

func TestStream(t *testing.T) {
	a, b := net.Pipe()
	sa, sb := NewStream(a), NewStream(b)
	defer sa.Close()
	defer sb.Close()
	var peer key.Key
	peer[0] = 7
	pkts := [][]byte{{4, 0, 0, 0, 1, 2, 3}, make([]byte, 1400)}
	go func() {
		sa.Write([]byte("hello"))
		sa.WriteRelayed(peer, pkts)
	}()
	buf := make([]byte, MaxStreamDatagram)
	n, err := sb.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("first datagram = %q, %v", buf[:n], err)
	}
	for _, want := range pkts {
		n, err := sb.Read(buf)
		if err != nil || !IsRelay(buf[:n]) {
			t.Fatalf("relay frame: %v, is relay %v", err, IsRelay(buf[:n]))
		}
		got, pkt, _ := ParseRelay(buf[:n])
		if got != peer || !bytes.Equal(pkt, want) {
			t.Fatalf("relay frame for %v with %d bytes, want %v with %d", got, len(pkt), peer, len(want))
		}
	}
	if err := sa.Write(make([]byte, MaxStreamDatagram+1)); err == nil {
		t.Fatal("oversized datagram written")
	}
	go sa.Write([]byte("0123456789"))
	if _, err := sb.Read(make([]byte, 4)); err == nil {
		t.Fatal("datagram longer than the buffer read")
	}
}

// TestStreamWriteNeverBlocks: writes to a stream whose other end does not
// read return at once, and once the queue is full they are refused with
// ErrQueueFull; after Close every write fails.
func TestStreamWriteNeverBlocks(t *testing.T) {
	a, b := net.Pipe() // a write blocks until the other end reads
	defer b.Close()
	s := NewStream(a)
	pkt := make([]byte, 1400)
	full := false
	start := time.Now()
	for range 2 * StreamQueueLimit / len(pkt) {
		if err := s.Write(pkt); err == ErrQueueFull {
			full = true
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("never refused a write to a stream nobody reads")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("writes took %v", took)
	}
	s.Close()
	if err := s.Write(pkt); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("write after Close: %v", err)
	}
}

func TestSecretSharedKey(t *testing.T) {
	server, peer := newKey(t), newKey(t)
	secret, err := NewSecret(server)
	if err != nil {
		t.Fatal(err)
	}
	got, err := secret.SharedKey(peer.Public())
	if err != nil {
		t.Fatal(err)
	}
	if got != NewSharedKey(server, peer.Public()) || got != NewSharedKey(peer, server.Public()) {
		t.Fatal("Secret.SharedKey differs from NewSharedKey")
	}
	// u = 0 and u = 1 are points of low order: their product with any
	// scalar is zero, a shared key everyone knows.
	for _, low := range []key.Key{{}, {1}} {
		if _, err := secret.SharedKey(low); err != ErrLowOrderKey {
			t.Errorf("SharedKey(%x…) = %v, want ErrLowOrderKey", low[:2], err)
		}
	}
}

func BenchmarkSecretSharedKey(b *testing.B) {
	secret, _ := NewSecret(newKey(b))
	peer := newKey(b).Public()
	for b.Loop() {
		secret.SharedKey(peer)
	}
}

func BenchmarkNewSharedKey(b *testing.B) {
	priv, peer := newKey(b), newKey(b).Public()
	for b.Loop() {
		NewSharedKey(priv, peer)
	}
}
