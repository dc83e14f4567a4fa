package rendezvous

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
)

// udpServer reads a UDP socket and hands each packet to handle, the relay
// frames of a receive batch to relays at once where batches are read
// (Linux).
type udpServer struct {
	handle packetHandler
	relays *relays
	log    *slog.Logger
}

// serve is Server.Serve.
func (us *udpServer) serve(conn *net.UDPConn, other netip.AddrPort) error {
	return us.serveBatched(conn, other) // batch_linux.go, batch_other.go
}

// serveEach is serve one datagram at a time: where batched I/O is not
// available.
func (us *udpServer) serveEach(conn *net.UDPConn, other netip.AddrPort) error {
	if other.Addr().IsUnspecified() {
		other = netip.AddrPort{} // no PKTINFO read here
	}
	buf := make([]byte, 65536)
	for {
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		us.handle(conn, other, buf[:n], netip.AddrPortFrom(src.Addr().Unmap(), src.Port()))
	}
}
