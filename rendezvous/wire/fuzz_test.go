package wire

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// fuzzKeys are fixed, so that the fuzzer can learn sealed inputs.
var fuzzA, fuzzB = key.Private{1, 2, 3}, key.Private{4, 5, 6}

// FuzzOpen feeds whole datagrams to what a receiver runs on every control
// packet from anyone: the header, the box opened with the key between the
// receiver and the sender the header names, the body. Nothing panics, and
// what parses re-encodes to the same bytes.
func FuzzOpen(f *testing.F) {
	ab := NewSharedKey(fuzzA, fuzzB.Public())
	for _, m := range samples {
		f.Add(Seal(nil, m.Type(), fuzzA.Public(), &ab, m.Append(nil)))
	}
	f.Add([]byte(Magic))
	f.Add([]byte(Magic + "\x01"))
	f.Add(make([]byte, Overhead))
	ba := NewSharedKey(fuzzB, fuzzA.Public())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			if IsControl(b) && len(b) >= Overhead {
				t.Fatalf("header of a %d-byte control message: %v", len(b), err)
			}
			return
		}
		shared := ba
		if h.Sender != fuzzA.Public() {
			shared = NewSharedKey(fuzzB, h.Sender)
		}
		plain, err := Open(b, &shared)
		if err != nil {
			return
		}
		m, err := Parse(h.Type, plain)
		if err != nil {
			return
		}
		if got := m.Append(nil); !bytes.Equal(got, plain) {
			t.Fatalf("%v: re-encoded %x, was %x", m.Type(), got, plain)
		}
	})
}

// FuzzTypeConfusion: the type byte travels outside the box, so whoever
// is on the path can change it. That gains nothing because no body parses
// as two types that the same two parties exchange: a peer's messages to
// the rendezvous, the rendezvous's to a peer, a peer's probes to a peer.
func FuzzTypeConfusion(f *testing.F) {
	for _, m := range samples {
		f.Add(m.Append(nil))
	}
	groups := [][]Type{
		{TypeRegister, TypeQuery, TypeDeregister},
		{TypeRegisterAck, TypeIntro},
		{TypePing, TypePong},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, g := range groups {
			var parsed []Type
			for _, typ := range g {
				if _, err := Parse(typ, body); err == nil {
					parsed = append(parsed, typ)
				}
			}
			if len(parsed) > 1 {
				t.Fatalf("%x parses as each of %v", body, parsed)
			}
		}
	})
}

// FuzzRelay checks relay framing: what IsRelay takes splits into a key and
// a packet that frame back into the same bytes.
func FuzzRelay(f *testing.F) {
	f.Add(AppendRelay(nil, key.Key{5}, []byte{4, 0, 0, 0, 1, 2, 3}))
	f.Add([]byte(RelayMagic))
	f.Add(append([]byte(RelayMagic), make([]byte, 31)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !IsRelay(b) {
			if len(b) >= RelayHeaderLen && string(b[:4]) == RelayMagic {
				t.Fatal("a relay frame not taken for one")
			}
			return
		}
		if IsControl(b) {
			t.Fatal("both a relay frame and a control message")
		}
		k, pkt, err := ParseRelay(b)
		if err != nil {
			t.Fatalf("a relay frame that does not parse: %v", err)
		}
		if got := AppendRelay(nil, k, pkt); !bytes.Equal(got, b) {
			t.Fatalf("reframed %x, was %x", got, b)
		}
	})
}

// byteConn is a net.Conn that reads from a byte slice.
type byteConn struct{ r io.Reader }

func (c byteConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c byteConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c byteConn) Close() error                     { return nil }
func (c byteConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c byteConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c byteConn) SetDeadline(time.Time) error      { return nil }
func (c byteConn) SetReadDeadline(time.Time) error  { return nil }
func (c byteConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzStream reads a TCP stream from anyone as the rendezvous does: every
// datagram read fits the buffer and the stream ends without panicking.
func FuzzStream(f *testing.F) {
	f.Add([]byte{0, 5, 'h', 'e', 'l', 'l', 'o', 0, 0})
	f.Add(appendFramed(nil, &key.Key{7}, []byte{4, 0, 0, 0, 1}))
	f.Add([]byte{0xff, 0xff, 1})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := NewStream(byteConn{bytes.NewReader(b)})
		defer s.Close()
		buf := make([]byte, 64)
		consumed := 0
		for {
			n, err := s.Read(buf)
			if err != nil {
				return
			}
			if n > len(buf) {
				t.Fatalf("datagram of %d bytes in a %d-byte buffer", n, len(buf))
			}
			consumed += 2 + n
			if consumed > len(b) {
				t.Fatalf("read %d bytes of datagrams from %d bytes", consumed, len(b))
			}
		}
	})
}
