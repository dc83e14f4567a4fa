package bind

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// sharedSocket is the shared socket as a link.Transport: what the control
// plane sends on it, and the routes straight to a peer.
type sharedSocket struct{ b *Bind }

// Send writes bufs to dst on the shared socket (sendStd).
func (s *sharedSocket) Send(bufs [][]byte, _ key.Key, dst netip.AddrPort) error {
	ep := s.b.endpointPool.Get().(*conn.StdNetEndpoint)
	ep.AddrPort = dst
	err := s.b.sendStd(bufs, ep)
	s.b.endpointPool.Put(ep)
	return err
}

func (s *sharedSocket) Kind() link.PathKind { return link.Shared }

// Close closes nothing: the shared socket closes with the Bind.
func (s *sharedSocket) Close() error { return nil }
