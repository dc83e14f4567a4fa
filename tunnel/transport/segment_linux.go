package transport

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/punchtun/punchtun/nat"
)

// UDP segmentation offload for the sockets beside the shared one
// (udpWriter) — the birthday socket that won a round carries a peer's
// WireGuard traffic — so that they move batches as the shared socket
// (wireguard-go's StdNetBind) does: a run of equal-sized datagrams leaves
// in one sendmsg with UDP_SEGMENT (GSO), and with UDP_GRO the kernel
// hands over up to 64 datagrams in one read.

const (
	maxSegments   = 64
	maxSegmentBuf = 65507 // the most a UDP datagram carries over IPv4
)

// msgTrunc is the flag of a datagram cut short by a small buffer.
const msgTrunc = unix.MSG_TRUNC

// errNoGSO: the kernel or the route refused UDP_SEGMENT; the caller
// sends one datagram at a time from then on.
var errNoGSO = errors.New("UDP GSO refused")

// sendSegmented writes bufs to dst on conn, coalescing runs of datagrams
// of one size (the last of a run may be shorter) into GSO sends through
// scratch, which must hold maxSegmentBuf bytes. On errNoGSO nothing of the
// failing run was sent, and bufs[sent:] are left.
func sendSegmented(conn *net.UDPConn, dst netip.AddrPort, bufs [][]byte, scratch []byte) (sent int, err error) {
	oob := make([]byte, unix.CmsgSpace(2))
	for sent < len(bufs) {
		size := len(bufs[sent])
		end, total := sent+1, size
		for end < len(bufs) && end-sent < maxSegments && len(bufs[end]) <= size && total+len(bufs[end]) <= maxSegmentBuf {
			total += len(bufs[end])
			end++
			if len(bufs[end-1]) < size {
				break // a shorter datagram ends a run
			}
		}
		if end-sent == 1 {
			if _, err := conn.WriteToUDPAddrPort(bufs[sent], dst); err != nil {
				return sent, err
			}
			sent++
			continue
		}
		b := scratch[:0]
		for _, p := range bufs[sent:end] {
			b = append(b, p...)
		}
		putCmsg(oob, unix.SOL_UDP, unix.UDP_SEGMENT, uint16(size))
		if _, _, err := conn.WriteMsgUDPAddrPort(b, oob, dst); err != nil {
			if errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT) {
				return sent, errNoGSO
			}
			return sent, err
		}
		sent = end
	}
	return sent, nil
}

// putCmsg writes one control message with a uint16 payload into oob.
func putCmsg(oob []byte, level, typ int32, v uint16) {
	hdr := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	hdr.Level, hdr.Type = level, typ
	hdr.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], v)
}

// carrierBuffer is the winning birthday socket's SO_RCVBUF and
// SO_SNDBUF, what wireguard-go gives the shared socket: at the default a
// birthday path ran at two thirds of a direct one (docs/benchmarks.md).
const carrierBuffer = 7 << 20

// enableCarrying sets conn up to carry a peer's WireGuard traffic: large
// buffers, and the kernel coalescing what it receives (UDP GRO).
func enableCarrying(conn *net.UDPConn) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		nat.SetSocketBuffers(int(fd), carrierBuffer)
		unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	})
}

// groOOB is the control buffer a read with GRO needs.
func groOOB() []byte { return make([]byte, unix.CmsgSpace(4)) }

// groSegment returns the segment size of a coalesced read from its
// control messages; 0 for a single datagram.
func groSegment(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_UDP && m.Header.Type == unix.UDP_GRO {
			switch {
			case len(m.Data) >= 4:
				return int(binary.NativeEndian.Uint32(m.Data))
			case len(m.Data) >= 2:
				return int(binary.NativeEndian.Uint16(m.Data))
			}
		}
	}
	return 0
}
