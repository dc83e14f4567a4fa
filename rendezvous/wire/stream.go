package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/punchtun/punchtun/tunnel/key"
)

// Stream carries datagrams over a TCP connection, for networks that block
// UDP: each datagram (a control message, a STUN message or a relay frame)
// travels behind its length, two bytes big-endian. Reads belong to one
// goroutine; writes may come from many and go out whole.
type Stream struct {
	conn   net.Conn
	remote netip.AddrPort
	r      *bufio.Reader

	wmu  sync.Mutex
	wbuf []byte
}

// streamWriteTimeout bounds a write, so that a peer that stopped reading
// stalls only its own traffic, and not for long.
const streamWriteTimeout = 5 * time.Second

// MaxStreamDatagram is the largest datagram a Stream carries.
const MaxStreamDatagram = 0xffff

// NewStream wraps an established connection.
func NewStream(c net.Conn) *Stream {
	var remote netip.AddrPort
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap := a.AddrPort()
		remote = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return &Stream{conn: c, remote: remote, r: bufio.NewReaderSize(c, 64<<10)}
}

// RemoteAddr is the other end's address.
func (s *Stream) RemoteAddr() netip.AddrPort { return s.remote }

// Close closes the connection; a blocked Read returns.
func (s *Stream) Close() error { return s.conn.Close() }

// SetReadDeadline bounds the next Read.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.conn.SetReadDeadline(t) }

// Read reads the next datagram into buf and returns its length. A datagram
// longer than buf is an error: the stream is then out of step and must be
// closed.
func (s *Stream) Read(buf []byte) (int, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n > len(buf) {
		return 0, errors.New("wire: stream datagram too long")
	}
	_, err := io.ReadFull(s.r, buf[:n])
	return n, err
}

// Write sends one datagram.
func (s *Stream) Write(pkt []byte) error {
	return s.write(func(b []byte) []byte { return appendFramed(b, nil, pkt) }, len(pkt) <= MaxStreamDatagram)
}

// WriteRelayed sends each packet as a relay frame naming peer, all in one
// write.
func (s *Stream) WriteRelayed(peer key.Key, pkts [][]byte) error {
	ok := true
	for _, p := range pkts {
		ok = ok && RelayHeaderLen+len(p) <= MaxStreamDatagram
	}
	return s.write(func(b []byte) []byte {
		for _, p := range pkts {
			b = appendFramed(b, &peer, p)
		}
		return b
	}, ok)
}

func (s *Stream) write(fill func([]byte) []byte, fits bool) error {
	if !fits {
		return errors.New("wire: datagram too long for a stream")
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf = fill(s.wbuf[:0])
	s.conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	_, err := s.conn.Write(s.wbuf)
	return err
}

// appendFramed appends pkt behind its length, as a relay frame for peer
// when peer is set.
func appendFramed(b []byte, peer *key.Key, pkt []byte) []byte {
	n := len(pkt)
	if peer != nil {
		n += RelayHeaderLen
	}
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	if peer != nil {
		return AppendRelay(b, *peer, pkt)
	}
	return append(b, pkt...)
}
