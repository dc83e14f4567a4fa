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

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Stream carries datagrams over a TCP connection, for networks that block
// UDP: each datagram (a control message, a STUN message or a relay frame)
// travels behind its length, two bytes big-endian. Reads belong to one
// goroutine.
//
// Writes never block: they append to a bounded queue that the stream's own
// writer goroutine sends, so that a peer that stops reading (a laptop
// asleep) stalls nothing but its own stream — not the rendezvous's UDP
// reader, not a lock other peers need, not the peer's control plane. A
// write that finds the queue full is refused with ErrQueueFull, as a full
// socket buffer drops a datagram; a send that fails or times out closes
// the connection, since a datagram cut half way leaves the framing broken.
type Stream struct {
	conn   net.Conn
	remote netip.AddrPort
	r      *bufio.Reader

	mu      sync.Mutex
	queued  []byte // framed datagrams waiting for the writer
	spare   []byte // the writer's last buffer, for reuse
	err     error  // why the stream stopped sending; then every write fails
	wake    chan struct{}
	closing chan struct{}
	closed  sync.Once
	writer  sync.WaitGroup
}

const (
	// streamWriteTimeout bounds one send: a peer that stopped reading
	// loses its stream after this long, and reconnects when it wakes.
	streamWriteTimeout = 5 * time.Second
	// StreamQueueLimit bounds the bytes queued on a stream: about 350
	// full-size relayed packets, a few milliseconds of a fast path and
	// plenty for control traffic.
	StreamQueueLimit = 512 << 10
)

// MaxStreamDatagram is the largest datagram a Stream carries.
const MaxStreamDatagram = 0xffff

var (
	// ErrQueueFull is a datagram dropped because the stream's queue is full.
	ErrQueueFull = errors.New("wire: stream queue full")
	// ErrStreamClosed is a write to a stream that was closed or failed.
	ErrStreamClosed = errors.New("wire: stream closed")
	errTooLong      = errors.New("wire: datagram too long for a stream")
)

// NewStream wraps an established connection and starts its writer; Close
// stops it.
func NewStream(c net.Conn) *Stream {
	var remote netip.AddrPort
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap := a.AddrPort()
		remote = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	s := &Stream{conn: c, remote: remote, r: bufio.NewReaderSize(c, 64<<10),
		wake: make(chan struct{}, 1), closing: make(chan struct{})}
	s.writer.Add(1)
	go s.writeLoop()
	return s
}

// RemoteAddr is the other end's address.
func (s *Stream) RemoteAddr() netip.AddrPort { return s.remote }

// Close closes the connection and waits for the writer to end; a blocked
// Read returns. What is still queued is dropped.
func (s *Stream) Close() error {
	var err error
	s.closed.Do(func() {
		close(s.closing)
		err = s.conn.Close()
		s.writer.Wait()
	})
	return err
}

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

// Write queues one datagram.
func (s *Stream) Write(pkt []byte) error {
	if len(pkt) > MaxStreamDatagram {
		return errTooLong
	}
	return s.enqueue(2+len(pkt), func(b []byte) []byte { return appendFramed(b, nil, pkt) })
}

// WriteRelayed queues each packet as a relay frame naming peer, all or none.
func (s *Stream) WriteRelayed(peer key.Key, pkts [][]byte) error {
	size := 0
	for _, p := range pkts {
		if RelayHeaderLen+len(p) > MaxStreamDatagram {
			return errTooLong
		}
		size += 2 + RelayHeaderLen + len(p)
	}
	return s.enqueue(size, func(b []byte) []byte {
		for _, p := range pkts {
			b = appendFramed(b, &peer, p)
		}
		return b
	})
}

// enqueue appends size bytes, written by fill, to the queue and wakes the
// writer. The lock covers only the copy: no I/O happens under it.
func (s *Stream) enqueue(size int, fill func([]byte) []byte) error {
	s.mu.Lock()
	switch {
	case s.err != nil:
		s.mu.Unlock()
		return s.err
	case len(s.queued)+size > StreamQueueLimit:
		s.mu.Unlock()
		return ErrQueueFull
	}
	s.queued = fill(s.queued)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // the writer is awake already
	}
	return nil
}

// writeLoop sends what is queued, all of it in one write, until the
// stream closes or a send fails.
func (s *Stream) writeLoop() {
	defer s.writer.Done()
	for {
		select {
		case <-s.closing:
			s.stop(ErrStreamClosed)
			return
		case <-s.wake:
		}
		s.mu.Lock()
		out := s.queued
		s.queued, s.spare = s.spare[:0], nil
		s.mu.Unlock()
		if len(out) == 0 {
			continue
		}
		s.conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := s.conn.Write(out); err != nil {
			s.stop(err)
			s.conn.Close() // the reader sees the end, and its owner cleans up
			return
		}
		s.mu.Lock()
		if s.spare == nil && cap(out) <= StreamQueueLimit+MaxStreamDatagram {
			s.spare = out[:0]
		}
		s.mu.Unlock()
	}
}

// stop makes every later write fail with err, and drops the queue.
func (s *Stream) stop(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = ErrStreamClosed
		if err != ErrStreamClosed {
			s.err = errors.Join(ErrStreamClosed, err)
		}
	}
	s.queued = nil
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
