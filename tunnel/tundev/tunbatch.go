package tundev

import (
	"sync"

	"golang.zx2c4.com/wireguard/tun"
)

// batchingTUN gathers single packets from the TUN device into batches.
//
// wireguard-go reads the device once per Read. A TCP flow's superpacket
// (TSO) brings tens of packets at once, but every other packet comes
// alone — UDP (QUIC, games, voice, iperf3 -u), TCP's ACKs, pings — and
// goes through encryption, the sender's hand-offs and one system call
// alone, and through every router on the way as a packet of its own
// instead of one GSO batch. A UDP flood through the direct path reached
// 17,600 packets a second, and the kernel dropped 84% of what iperf3 sent
// at the TUN device (its TX drops), where Nebula, which batches, carried 4
// times as much in the same lab.
//
// So after a read that returned one packet, while the device has more
// ready (a poll that does not wait, on Linux), batchingTUN reads
// on and hands the packets over in the same batch. The follow-up reads go
// into spare buffers as long as wireguard-go's own — a follow-up can be a
// superpacket of up to a whole batch of segments, which might not fit in
// what is left of this batch — and are copied over; what does not fit is
// handed over first in the next Read, which then does not wait. A TCP
// superpacket read first is a batch already and is passed on untouched.
type batchingTUN struct {
	tun.Device
	ready func() bool // a read would not wait; nil: no batching here
	room  func() int  // how many packets wireguard-go may take in now (inflight.room)
	// spare receives follow-up reads, spare[next:end] not yet handed over.
	// mu: the reader holds it while it uses spare, so that Close, which
	// wireguard-go calls while its reader may still be in Read, unmaps
	// the memory only once the reader is out of it.
	mu         sync.Mutex
	spare      [][]byte
	spareSizes []int
	next, end  int
	free       func() // releases spare's memory
	closed     bool
}

// maxGathered bounds a gathered batch: one GSO send's worth (StdNetBind
// coalesces up to 64 datagrams a send), so gathering further would only
// put more of wireguard-go's 64 KiB buffers in flight. With 128 (a whole
// batch) the peaks under iperf3 rose by 5 MiB (TCP: ACKs come one per
// read) for no more speed.
const maxGathered = 64

// newBatchingTUN wraps dev; follow-up reads stop where a batch would
// take wireguard-go past room (the bound on the packets it holds, so that
// a gathered batch does not double it). Without a way to ask dev whether
// a read would wait, reads pass straight through.
func newBatchingTUN(dev tun.Device, room func() int) *batchingTUN {
	return &batchingTUN{Device: dev, ready: tunReady(dev), room: room}
}

func (t *batchingTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.mu.Lock()
	n := t.handOver(bufs, sizes, offset)
	t.mu.Unlock()
	if n == 0 {
		var err error
		n, err = t.Device.Read(bufs, sizes, offset)
		if err != nil || n != 1 || t.ready == nil {
			return n, err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	limit := min(len(bufs), t.room(), maxGathered)
	for n < limit && t.next == t.end && !t.closed && t.ready() {
		if t.spare == nil && !t.allocSpare(len(bufs), len(bufs[0])) {
			break
		}
		m, err := t.Device.Read(t.spare, t.spareSizes, offset)
		t.next, t.end = 0, m
		n += t.handOver(bufs[n:], sizes[n:], offset)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// handOver copies held follow-up packets into bufs, as many as fit.
func (t *batchingTUN) handOver(bufs [][]byte, sizes []int, offset int) int {
	n := 0
	for ; n < len(bufs) && t.next < t.end; n++ {
		size := t.spareSizes[t.next]
		copy(bufs[n][offset:], t.spare[t.next][offset:offset+size])
		sizes[n] = size
		t.next++
	}
	return n
}

// allocSpare makes count spare buffers of size bytes each (spareMemory,
// on Linux: outside Go's heap, so that only the pages reads touch
// count).
func (t *batchingTUN) allocSpare(count, size int) bool {
	mem, free, err := spareMemory(count * size)
	if err != nil {
		t.ready = nil // no batching, rather than no tunnel
		return false
	}
	t.spare, t.spareSizes, t.free = make([][]byte, count), make([]int, count), free
	for i := range t.spare {
		t.spare[i] = mem[i*size : (i+1)*size : (i+1)*size]
	}
	return true
}

// Close closes the device, which ends a read in progress, and releases
// the spare buffers once the reader is out of them.
func (t *batchingTUN) Close() error {
	err := t.Device.Close()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.free != nil {
		t.free()
		t.free, t.spare = nil, nil
		t.next, t.end = 0, 0
	}
	return err
}
