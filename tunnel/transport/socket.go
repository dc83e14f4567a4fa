package transport

import (
	"net"
	"net/netip"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// Socket is a UDP socket of its own to one peer: one of a birthday
// round's sockets, which carries the peer's WireGuard once it wins.
type Socket struct {
	udpWriter
	bufSize int // the first read buffer's size
}

// NewSocket returns the transport over conn, read at first with buffers
// of bufSize bytes.
func NewSocket(conn *net.UDPConn, bufSize int) *Socket {
	return &Socket{udpWriter: udpWriter{conn: conn}, bufSize: bufSize}
}

// Send writes bufs to dst.
func (s *Socket) Send(bufs [][]byte, _ key.Key, dst netip.AddrPort) error { return s.write(bufs, dst) }

func (s *Socket) Kind() link.PathKind { return link.Socket }

func (s *Socket) Close() error { return s.conn.Close() }

// LocalAddr is the socket's own address.
func (s *Socket) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// Receive reads the socket until it is closed. A datagram bigger than the
// buffer (a peer with a larger MTU) is lost, handed to deliver empty so
// that it is counted, and the buffer grows for the next. Once WireGuard
// comes in — the socket won the round — it takes batches: GRO on, a buffer
// for 64 coalesced datagrams, and the shared socket's buffer sizes.
func (s *Socket) Receive(deliver func(pkt []byte, src netip.AddrPort) bool) error {
	buf, oob := make([]byte, s.bufSize), groOOB()
	carrying := false
	for {
		n, oobn, flags, src, err := s.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			return err
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if flags&msgTrunc != 0 {
			deliver(nil, src)
			buf = make([]byte, 65536)
			continue
		}
		seg := groSegment(oob[:oobn])
		if seg <= 0 {
			seg = n
		}
		wireGuard := false
		for data := buf[:n]; len(data) > 0; {
			pkt := data[:min(seg, len(data))]
			data = data[len(pkt):]
			wireGuard = deliver(pkt, src) || wireGuard
		}
		if wireGuard && !carrying {
			carrying = true
			buf = make([]byte, 65536)
			enableCarrying(s.conn)
		}
	}
}
