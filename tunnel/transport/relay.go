package transport

import (
	"net/netip"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// Relay is a rendezvous's relay over UDP: each packet goes in a relay
// frame naming its peer, on the shared socket, to the rendezvous. What
// the rendezvous relays to us arrives on the shared socket, which
// WireGuard reads.
type Relay struct {
	shared link.Transport
}

// NewRelay returns the relay on the shared socket.
func NewRelay(shared link.Transport) *Relay { return &Relay{shared: shared} }

// Send frames bufs for peer and sends them to the rendezvous at dst.
func (r *Relay) Send(bufs [][]byte, peer key.Key, dst netip.AddrPort) error {
	rf := frame(bufs, wire.RelayHeaderLen, func(buf, p []byte) []byte { return wire.AppendRelay(buf, peer, p) })
	err := r.shared.Send(rf.frames, peer, dst)
	framePool.Put(rf)
	return err
}

func (r *Relay) Kind() link.PathKind { return link.Relay }

// Close closes nothing: the shared socket is the data path's.
func (r *Relay) Close() error { return nil }
