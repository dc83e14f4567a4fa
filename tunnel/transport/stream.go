package transport

import (
	"net/netip"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// Stream is a rendezvous's relay over its TCP stream (wire.Stream), while
// UDP is blocked: relay frames both ways, and the rendezvous's own
// messages.
type Stream struct {
	*wire.Stream
	// addr is the rendezvous's UDP address: what arrives is from there,
	// as if it had come over UDP.
	addr netip.AddrPort
}

// NewStream returns the relay over st, to the rendezvous at addr.
func NewStream(st *wire.Stream, addr netip.AddrPort) *Stream { return &Stream{Stream: st, addr: addr} }

// Send frames bufs for peer on the stream; dst is the stream's end.
func (s *Stream) Send(bufs [][]byte, peer key.Key, _ netip.AddrPort) error {
	return s.WriteRelayed(peer, bufs)
}

func (s *Stream) Kind() link.PathKind { return link.RelayTCP }

// Receive hands deliver what the rendezvous sends, from its address, until
// the stream ends.
func (s *Stream) Receive(deliver func(pkt []byte, src netip.AddrPort) bool) error {
	buf := make([]byte, wire.MaxStreamDatagram)
	for {
		n, err := s.Read(buf)
		if err != nil {
			return err
		}
		deliver(buf[:n], s.addr)
	}
}
