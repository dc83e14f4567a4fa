//go:build !linux

package transport

import (
	"errors"
	"net"
	"net/netip"
)

const maxSegmentBuf = 65507

// msgTrunc: no truncation flag is read here (up runs on Linux only).
const msgTrunc = 0

var errNoGSO = errors.New("UDP GSO is Linux's")

// sendSegmented: no GSO here; the caller sends one datagram at a time.
func sendSegmented(conn *net.UDPConn, dst netip.AddrPort, bufs [][]byte, scratch []byte) (int, error) {
	return 0, errNoGSO
}

func enableCarrying(conn *net.UDPConn) {}
func groOOB() []byte                   { return nil }
func groSegment(oob []byte) int        { return 0 }
