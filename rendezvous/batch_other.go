//go:build !linux

package rendezvous

import (
	"net"
	"net/netip"
)

// serveBatched serves one datagram at a time: recvmmsg, sendmmsg and UDP
// segmentation offload are Linux's, where serveBatched uses them.
func (us *udpServer) serveBatched(conn *net.UDPConn, other netip.AddrPort) error {
	return us.serveEach(conn, other)
}
