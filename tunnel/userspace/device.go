package userspace

import (
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// device is the stack as WireGuard's tun.Device. Read hands over what the
// stack sent, many packets a call, TCP's superpackets cut to the MTU
// (gso.go); Write hands a batch of received packets to the stack through
// GRO, which joins a flow's consecutive TCP segments into one, so that
// TCP takes a batch's worth of data at once.
type device struct {
	ep     *linkEndpoint
	stack  *stack.Stack
	mtu    int
	events chan tun.Event
	wake   chan struct{} // Wake's, to a Read waiting for the stack

	// Dropped counts packets neither side could take: malformed, too
	// long for the buffer given, lowering the path MTU (pmtu.go), or
	// ICMP errors from another peer than the connection's (icmp.go),
	// which ICMPRefused counts apart.
	Dropped     atomic.Uint64
	ICMPRefused atomic.Uint64
	routes      atomic.Pointer[peerRoutes] // SetPeerRoutes'

	// readMu: wireguard-go reads from one goroutine; the lock keeps the
	// superpacket being cut its own all the same.
	readMu  sync.Mutex
	seg     tcpSegmenter
	scratch []byte // the superpacket seg cuts

	gros      sync.Pool // *coalescer, one per Write at a time
	closeOnce sync.Once
}

// readBatch bounds the packets a Read hands over: one GSO send's worth
// (StdNetBind joins up to 64 datagrams a send). 128 raised each peer's
// peak RSS under iperf3 by 10 MiB (more of wireguard-go's 64 KiB buffers
// in flight) for no speed that showed.
const readBatch = 64

func newDevice(s *stack.Stack, ep *linkEndpoint, mtu int) *device {
	d := &device{ep: ep, stack: s, mtu: mtu, events: make(chan tun.Event, 1), wake: make(chan struct{}, 1), scratch: make([]byte, 1<<16)}
	d.gros.New = func() any { return newCoalescer() }
	d.routes.Store(newPeerRoutes(nil))
	d.events <- tun.EventUp
	return d
}

func (d *device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.readMu.Lock()
	defer d.readMu.Unlock()
	limit := min(len(bufs), readBatch)
	n := 0
	for n < limit {
		if d.seg.pending() {
			if sizes[n] = d.seg.cut(bufs[n][offset:]); sizes[n] == 0 {
				d.seg.drop()
				d.Dropped.Add(1)
				continue
			}
			n++
			continue
		}
		var pkt *stack.PacketBuffer
		if n == 0 {
			select {
			case pkt = <-d.ep.out:
			case <-d.wake:
				return 0, nil
			case <-d.ep.done:
				return 0, os.ErrClosed
			}
		} else {
			select {
			case pkt = <-d.ep.out:
			default:
				return n, nil
			}
		}
		if d.take(pkt, bufs[n][offset:], &sizes[n]) {
			n++
		}
	}
	return n, nil
}

// take hands over pkt: copied into dst (true, its size in *size), or, a
// TCP packet whose checksum is left to the link, to be cut by seg
// (false). pkt is released.
func (d *device) take(pkt *stack.PacketBuffer, dst []byte, size *int) bool {
	defer pkt.DecRef()
	gso := pkt.GSOOptions
	if gso.Type != stack.GSOTCPv4 && gso.Type != stack.GSOTCPv6 {
		if *size = flatten(dst, pkt); *size == 0 {
			d.Dropped.Add(1)
			return false
		}
		return true
	}
	n := flatten(d.scratch, pkt)
	if n == 0 || !d.seg.start(d.scratch[:n], int(gso.MSS)) {
		d.Dropped.Add(1)
	}
	return false
}

// flatten copies pkt into dst and returns its length; 0 if it does not
// fit.
func flatten(dst []byte, pkt *stack.PacketBuffer) int {
	size := pkt.Size()
	if size > len(dst) {
		return 0
	}
	views, skip := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil && n < size; v = v.Next() {
		b := v.AsSlice()
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		n += copy(dst[n:size], b[skip:])
		skip = 0
	}
	return n
}

// Write hands the packets to the stack, through GRO, flushed at the end
// of the batch; what is not an IP packet, what would shrink the stack's
// path MTU under IP's floor (pmtu.go), and an ICMP error from another
// peer than the one the connection it names goes to (icmp.go) are
// dropped and counted.
//
// Their checksums are not checked (the link offers RX checksum offload,
// link.go): every packet written here was decrypted by WireGuard, whose
// Poly1305 tag authenticated each of its bytes as the peer's WireGuard
// sealed them, so what a checksum guards against, damage on the way, is
// already caught (such a packet fails to decrypt and is dropped). What is
// left, a peer sending a wrong checksum, harms nobody but that peer: it
// could send the same bytes with a right one.
func (d *device) Write(bufs [][]byte, offset int) (int, error) {
	dispatcher := d.ep.attached()
	if dispatcher == nil {
		return 0, os.ErrClosed
	}
	c := d.gros.Get().(*coalescer)
	c.to = dispatcher
	for _, buf := range bufs {
		p := buf[offset:]
		proto, ok := d.admit(p)
		if !ok {
			d.Dropped.Add(1)
			continue
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		pkt.NetworkProtocolNumber = proto
		pkt.RXChecksumValidated = true
		c.gro.Enqueue(pkt)
		pkt.DecRef()
	}
	c.flush()
	c.to = nil
	d.gros.Put(c)
	return len(bufs), nil
}

// admit reports whether the stack may have p, and its network protocol.
func (d *device) admit(p []byte) (tcpip.NetworkProtocolNumber, bool) {
	switch {
	case len(p) >= header.IPv4MinimumSize && header.IPVersion(p) == header.IPv4Version:
		msg, ok := icmp4(p)
		return header.IPv4ProtocolNumber, ok && (msg == nil || d.admitICMP4(p, msg))
	case len(p) >= header.IPv6MinimumSize && header.IPVersion(p) == header.IPv6Version:
		msg, ok := icmp6(p)
		return header.IPv6ProtocolNumber, ok && (msg == nil || d.admitICMP6(p, msg))
	}
	return 0, false
}

// Wake makes a Read waiting for the stack return at once with nothing
// (tundev.Waker): what the wrapper above holds is ready, packets released
// for a member just found or injected, and the stack may send nothing more
// for minutes.
func (d *device) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *device) File() *os.File           { return nil }
func (d *device) MTU() (int, error)        { return d.mtu, nil }
func (d *device) Name() (string, error)    { return "go", nil }
func (d *device) Events() <-chan tun.Event { return d.events }
func (d *device) BatchSize() int           { return readBatch }

// Close closes the stack: its endpoints are aborted, a sender waiting
// for room and a Read waiting for a packet return, and what was queued
// is released.
func (d *device) Close() error {
	d.closeOnce.Do(func() {
		close(d.ep.done)
		d.stack.Close()
		d.stack.Wait()
		d.ep.release()
		close(d.events)
	})
	return nil
}
