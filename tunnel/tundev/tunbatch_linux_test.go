package tundev

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// scriptedTUN is a TUN device whose reads come from a script: each entry
// is what one read returns (one packet, or a superpacket's segments).
type scriptedTUN struct {
	tun.Device
	reads  [][][]byte
	calls  int
	err    error // returned, with the packets, by the last scripted read
	closed bool
}

func (s *scriptedTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(s.reads) == 0 {
		return 0, errors.New("read would block: nothing scripted")
	}
	s.calls++
	pkts := s.reads[0]
	s.reads = s.reads[1:]
	n := 0
	for ; n < len(pkts) && n < len(bufs); n++ {
		sizes[n] = copy(bufs[n][offset:], pkts[n])
	}
	if n < len(pkts) {
		return n, tun.ErrTooManySegments
	}
	if len(s.reads) == 0 && s.err != nil {
		return n, s.err
	}
	return n, nil
}

func (s *scriptedTUN) ready() bool  { return len(s.reads) > 0 }
func (s *scriptedTUN) Close() error { s.closed = true; return nil }

func packet(i, size int) []byte { return bytes.Repeat([]byte{byte(i)}, size) }

// segments is a superpacket's worth of packets, numbered from first.
func segments(first, count int) [][]byte {
	var pkts [][]byte
	for i := range count {
		pkts = append(pkts, packet(first+i, 1000))
	}
	return pkts
}

// singles is count reads of one packet each, numbered from 0.
func singles(count, size int) [][][]byte {
	var reads [][][]byte
	for i := range count {
		reads = append(reads, [][]byte{packet(i, size)})
	}
	return reads
}

func newScripted(reads ...[][]byte) (*scriptedTUN, *batchingTUN) {
	s := &scriptedTUN{reads: reads}
	return s, &batchingTUN{Device: s, ready: s.ready, room: func() int { return inflightLimit }}
}

const testOffset = 16

func wgBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	return bufs, make([]int, n)
}

// wantPackets checks that bufs hold, in order, packets numbered from first.
func wantPackets(t *testing.T, bufs [][]byte, sizes []int, n, first int, size int) {
	t.Helper()
	for i := range n {
		if got := bufs[i][testOffset : testOffset+sizes[i]]; !bytes.Equal(got, packet(first+i, size)) {
			t.Fatalf("packet %d: %d bytes of %d, want %d bytes of %d", i, len(got), got[0], size, first+i)
		}
	}
}

// TestBatchingTUNGathersSinglePackets: packets that come one per read
// reach wireguard-go in one batch, in order, bytes intact.
func TestBatchingTUNGathersSinglePackets(t *testing.T) {
	s, b := newScripted(singles(10, 1200)...)
	bufs, sizes := wgBufs(8)
	n, err := b.Read(bufs, sizes, testOffset)
	if err != nil || n != 8 {
		t.Fatalf("Read: %d packets, %v; want 8", n, err)
	}
	wantPackets(t, bufs, sizes, n, 0, 1200)
	n, err = b.Read(bufs, sizes, testOffset)
	if err != nil || n != 2 {
		t.Fatalf("second Read: %d packets, %v; want the 2 left", n, err)
	}
	wantPackets(t, bufs, sizes, n, 8, 1200)
	if s.calls != 10 {
		t.Fatalf("%d device reads, want 10", s.calls)
	}
	b.Close()
}

// TestBatchingTUNSuperpacketFirst: a superpacket read first is a batch
// already; nothing more is read behind it.
func TestBatchingTUNSuperpacketFirst(t *testing.T) {
	s, b := newScripted(segments(0, 5), [][]byte{packet(9, 1000)})
	bufs, sizes := wgBufs(8)
	n, err := b.Read(bufs, sizes, testOffset)
	if err != nil || n != 5 || s.calls != 1 {
		t.Fatalf("Read: %d packets in %d reads, %v; want 5 in 1", n, s.calls, err)
	}
	wantPackets(t, bufs, sizes, n, 0, 1000)
	b.Close()
}

// TestBatchingTUNSuperpacketFollowing: a superpacket behind a single
// packet fills the batch; what does not fit comes first in the next Read,
// without a device read (which would wait).
func TestBatchingTUNSuperpacketFollowing(t *testing.T) {
	s, b := newScripted([][]byte{packet(0, 1000)}, segments(1, 8))
	bufs, sizes := wgBufs(8)
	n, err := b.Read(bufs, sizes, testOffset)
	if err != nil || n != 8 {
		t.Fatalf("Read: %d packets, %v; want 8", n, err)
	}
	wantPackets(t, bufs, sizes, n, 0, 1000)
	n, err = b.Read(bufs, sizes, testOffset)
	if err != nil || n != 1 {
		t.Fatalf("second Read: %d packets, %v; want the 1 held", n, err)
	}
	wantPackets(t, bufs, sizes, n, 8, 1000)
	if s.calls != 2 {
		t.Fatalf("%d device reads, want 2", s.calls)
	}
	b.Close()
}

// TestBatchingTUNError: an error on a follow-up read comes back with the
// packets read before it, which wireguard-go handles first.
func TestBatchingTUNError(t *testing.T) {
	s, b := newScripted([][]byte{packet(0, 500)}, [][]byte{packet(1, 500)})
	s.err = os.ErrClosed
	bufs, sizes := wgBufs(8)
	n, err := b.Read(bufs, sizes, testOffset)
	if n != 2 || !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read: %d packets, %v; want 2 and %v", n, err, os.ErrClosed)
	}
	wantPackets(t, bufs, sizes, n, 0, 500)
	if b.Close(); !s.closed || b.spare != nil {
		t.Fatal("Close did not close the device and release the spare buffers")
	}
}

// TestBatchingTUNRoom: follow-up reads stop where the batch would take
// wireguard-go past the packets it may hold.
func TestBatchingTUNRoom(t *testing.T) {
	s, b := newScripted(singles(10, 1200)...)
	b.room = func() int { return 3 }
	bufs, sizes := wgBufs(8)
	if n, err := b.Read(bufs, sizes, testOffset); n != 3 || err != nil || s.calls != 3 {
		t.Fatalf("Read: %d packets in %d reads, %v; want 3 in 3", n, s.calls, err)
	}
	b.room = func() int { return -5 } // over the bound already: the one read goes on alone
	if n, err := b.Read(bufs, sizes, testOffset); n != 1 || err != nil || s.calls != 4 {
		t.Fatalf("Read over the bound: %d packets in %d reads, %v; want 1 in 1 more", n, s.calls, err)
	}
	wantPackets(t, bufs, sizes, 1, 3, 1200)
	b.Close()
}

// TestBatchingTUNNotReady: with nothing more ready, a single packet goes
// on alone at once.
func TestBatchingTUNNotReady(t *testing.T) {
	s, b := newScripted([][]byte{packet(0, 100)})
	b.ready = func() bool { return false }
	bufs, sizes := wgBufs(8)
	if n, err := b.Read(bufs, sizes, testOffset); n != 1 || err != nil || s.calls != 1 {
		t.Fatalf("Read: %d packets in %d reads, %v; want 1 in 1", n, s.calls, err)
	}
	if b.spare != nil {
		t.Fatal("spare buffers allocated without a follow-up read")
	}
}
