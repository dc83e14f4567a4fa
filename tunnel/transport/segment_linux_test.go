package transport

import (
	"bytes"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSegmentedRoundTrip: runs of datagrams leave in GSO sends and come
// back, through GRO, as the same datagrams in the same order.
func TestSegmentedRoundTrip(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	enableCarrying(rx)
	if os.Geteuid() == 0 {
		// The kernel reports twice what was set (its bookkeeping).
		if got := sockRcvBuf(t, rx); got < carrierBuffer {
			t.Fatalf("SO_RCVBUF %d, want at least %d", got, carrierBuffer)
		}
	}
	var bufs [][]byte
	for i := range 150 { // more than one run: 64, 64, then a short tail
		size := 1200
		if i == 70 || i == 149 {
			size = 300 // a shorter datagram ends a run
		}
		bufs = append(bufs, bytes.Repeat([]byte{byte(i)}, size))
	}
	sent, err := sendSegmented(tx, rx.LocalAddr().(*net.UDPAddr).AddrPort(), bufs, make([]byte, maxSegmentBuf))
	if err != nil || sent != len(bufs) {
		t.Fatalf("sent %d of %d: %v", sent, len(bufs), err)
	}
	var got [][]byte
	buf, oob := make([]byte, 65536), groOOB()
	reads := 0
	rx.SetReadDeadline(time.Now().Add(2 * time.Second))
	for len(got) < len(bufs) {
		n, oobn, _, _, err := rx.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		reads++
		seg := groSegment(oob[:oobn])
		if seg <= 0 {
			seg = n
		}
		for data := buf[:n]; len(data) > 0; {
			p := data[:min(seg, len(data))]
			data = data[len(p):]
			got = append(got, bytes.Clone(p))
		}
	}
	for i := range bufs {
		if !bytes.Equal(got[i], bufs[i]) {
			t.Fatalf("datagram %d: %d bytes of %d, want %d bytes of %d", i, len(got[i]), got[i][0], len(bufs[i]), i)
		}
	}
	t.Logf("%d datagrams in %d reads", len(bufs), reads)
	if reads >= len(bufs) {
		t.Errorf("no coalescing: %d reads for %d datagrams", reads, len(bufs))
	}
}

func sockRcvBuf(t *testing.T, c *net.UDPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var size int
	rc.Control(func(fd uintptr) { size, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if err != nil {
		t.Fatal(err)
	}
	return size
}
