package tundev

import (
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// wireguard-go takes packets in as fast as its socket and its TUN device
// hand them over, and queues what it cannot yet encrypt, send, decrypt or
// write: up to a thousand batches per queue, each packet in a 64 KiB
// buffer. Under iperf3 a peer grew to some 200 MiB resident
// (docs/benchmarks.md, "Held packets and the collector"), while the
// packets waiting added nothing but delay: the side that cannot keep up is
// the bottleneck either way. An inflight bounds the packets between taking
// in and handing out, per direction: past its limit, the taking in waits,
// and the backlog stays in the kernel's socket buffer or TUN queue, which
// drop when full — the signal TCP inside the tunnel slows down on.
//
// The count is kept at the edges (packets read from TUN and sent on the
// socket; WireGuard data received and written to TUN), and a few packets
// leave wireguard-go by neither edge (dropped: no session yet, a bad
// source address, a replay). So a wait that sees no packet leave for
// inflightStall takes the count for drifted and starts it afresh: a lost
// count costs one such wait, never a stall.

// inflightLimit is the packets each direction may hold, and what the
// next read adds: low enough to keep the peak near the live heap, high
// enough to keep wireguard-go's throughput (measurements:
// docs/benchmarks.md).
const inflightLimit = 96

// inflightStall is how long a wait may see nothing leave.
const inflightStall = 20 * time.Millisecond

type inflight struct {
	n    atomic.Int64
	left chan struct{} // a token when packets leave while someone waits
}

func newInflight() *inflight { return &inflight{left: make(chan struct{}, 1)} }

// wait returns once fewer than inflightLimit packets are held, or nothing
// left for inflightStall.
func (f *inflight) wait() {
	if f.n.Load() < inflightLimit {
		return
	}
	t := time.NewTimer(inflightStall)
	defer t.Stop()
	for f.n.Load() >= inflightLimit {
		select {
		case <-f.left:
			t.Reset(inflightStall)
		case <-t.C:
			f.n.Store(0) // drifted: see above
			return
		}
	}
}

// room is how many more packets may be taken in now.
func (f *inflight) room() int { return inflightLimit - int(f.n.Load()) }

// add counts n packets taken in.
func (f *inflight) add(n int) { f.n.Add(int64(n)) }

// done counts n packets handed out.
func (f *inflight) done(n int) {
	if n == 0 {
		return
	}
	if f.n.Add(-int64(n)) < 0 {
		f.n.Store(0)
	}
	select {
	case f.left <- struct{}{}:
	default:
	}
}

// boundedTUN is the TUN device as wireguard-go sees it: reads wait while
// too many outbound packets are held, and writes count inbound packets
// out.
type boundedTUN struct {
	tun.Device
	in, out *inflight
}

func (t *boundedTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.out.wait()
	n, err := t.Device.Read(bufs, sizes, offset)
	t.out.add(n)
	return n, err
}

func (t *boundedTUN) Write(bufs [][]byte, offset int) (int, error) {
	n, err := t.Device.Write(bufs, offset)
	t.in.done(len(bufs))
	return n, err
}

// boundedBind is the socket as wireguard-go sees it: its receive
// functions wait while too many inbound packets are held, and sends count
// outbound packets out.
type boundedBind struct {
	conn.Bind
	in, out *inflight
}

func (b *boundedBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	for i, fn := range fns {
		fns[i] = func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			b.in.wait()
			n, err := fn(bufs, sizes, eps)
			b.in.add(heldData(bufs, sizes, n))
			return n, err
		}
	}
	return fns, actual, err
}

func (b *boundedBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	err := b.Bind.Send(bufs, ep)
	b.out.done(dataPackets(bufs))
	return err
}

// WireGuard's transport messages: a type, and 32 bytes (a 16-byte header
// and a 16-byte tag) around the packet they carry, if any.
const (
	wireGuardTransport    = 4
	wireGuardKeepaliveLen = 32
)

// isData reports whether p is a transport message that carries a packet.
func isData(p []byte) bool { return len(p) > wireGuardKeepaliveLen && p[0] == wireGuardTransport }

// heldData counts the WireGuard data packets among the first n of bufs
// that a receive function hands wireguard-go (those of size 0 it skips).
func heldData(bufs [][]byte, sizes []int, n int) int {
	held := 0
	for i := range n {
		if isData(bufs[i][:sizes[i]]) {
			held++
		}
	}
	return held
}

// dataPackets counts the WireGuard data packets among bufs: transport
// messages that carry a packet (keepalives carry none, and neither come
// from TUN nor go to it).
func dataPackets(bufs [][]byte) int {
	n := 0
	for _, p := range bufs {
		if isData(p) {
			n++
		}
	}
	return n
}
