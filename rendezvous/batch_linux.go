//go:build linux

package rendezvous

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
)

// Batched UDP I/O for the relay. A peer's WireGuard sends its packets in
// GSO batches, up to 64 KiB at a time; relaying them one datagram per
// system call in and one out caps the relay at a fraction of the direct
// path. So the rendezvous reads many datagrams per recvmmsg, with UDP GRO
// (the kernel hands over a peer's batch as one datagram plus its segment
// size), and writes its relayed frames with sendmmsg and UDP GSO: frames of
// one size to one destination leave as one message, which the kernel cuts
// up. A GRO datagram relayed whole to one peer leaves as it came in,
// without a copy: forwarding only rewrites each frame's key in place.
const (
	// socketBuffer is asked for as SO_RCVBUF and SO_SNDBUF (as root, past
	// the sysctl limits): bursts of relayed batches must not overflow.
	socketBuffer = 7 << 20
	// readBatch is datagrams per recvmmsg, each up to maxDatagram (a GRO
	// datagram holds up to 64 segments): 2 MiB of buffers per reader.
	readBatch   = 32
	maxDatagram = 1 << 16
	// writeBatch is messages per sendmmsg.
	writeBatch = 64
	// maxSegments and maxSegmentBytes bound one GSO message: the kernel's
	// UDP_MAX_SEGMENTS, and the most a UDP datagram over IPv4 can carry.
	maxSegments     = 64
	maxSegmentBytes = 65535 - 20 - 8
	// arenaSize is where frames of separate datagrams are copied to be
	// sent as one GSO message.
	arenaSize = 4 * maxDatagram
	// oobSize holds a UDP_GRO and an IPV6_PKTINFO control message.
	oobSize = 128
)

// serveReaders is the number of goroutines reading one socket. Two relayed
// no faster in the lab on 2 cores (which the peers share), and would
// reorder a flow's packets between them.
const serveReaders = 1

// batchRW is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchRW interface {
	ReadBatch(ms []ipv6.Message, flags int) (int, error)
	WriteBatch(ms []ipv6.Message, flags int) (int, error)
}

// udpBatch is a UDP socket set up for batched I/O.
type udpBatch struct {
	conn *net.UDPConn
	rw   batchRW
	v6   bool        // an AF_INET6 socket: IPv4 destinations are written v4-mapped
	gso  atomic.Bool // UDP_SEGMENT works; cleared when the kernel refuses it
}

func newUDPBatch(conn *net.UDPConn) (*udpBatch, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var domain int
	var derr error
	gso := false
	unspecified := conn.LocalAddr().(*net.UDPAddr).IP.IsUnspecified()
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		domain, derr = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_DOMAIN)
		nat.SetSocketBuffers(s, socketBuffer)
		// GRO is only asked for: without it, datagrams come one by one.
		unix.SetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
		if unspecified {
			// The address each packet came to, for STUN's OTHER-ADDRESS
			// (see Serve). An IPv6 socket reports IPv4 ones v4-mapped.
			unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
		_, gerr := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		gso = gerr == nil
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return nil, err
	}
	u := &udpBatch{conn: conn, v6: domain == unix.AF_INET6}
	if u.v6 {
		u.rw = ipv6.NewPacketConn(conn)
	} else {
		u.rw = ipv4.NewPacketConn(conn)
	}
	u.gso.Store(gso)
	return u, nil
}

// serveBatched is serve with recvmmsg and sendmmsg, and UDP GRO and GSO
// where the kernel has them.
func (us *udpServer) serveBatched(conn *net.UDPConn, other netip.AddrPort) error {
	u, err := newUDPBatch(conn)
	if err != nil {
		us.log.Warn("batched UDP unavailable, serving one datagram at a time", "err", err)
		return us.serveEach(conn, other)
	}
	errs := make([]error, serveReaders)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = newBatchReader(us, u, other).run()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// batchReader is one goroutine's receive and send state; nothing in it is
// allocated per packet.
type batchReader struct {
	us     *udpServer
	u      *udpBatch
	egress egress // u.conn, as registrations name it
	other  netip.AddrPort

	in     []ipv6.Message
	inBufs [][]byte
	inOOB  [][]byte

	relays []relayFrame // the batch's relay frames, in order

	out     []ipv6.Message
	outMeta []outMeta
	outAddr []net.UDPAddr
	outIP   [][16]byte
	outOOB  [][]byte
	nout    int
	arena   []byte
}

// outMeta describes out[i]: its destination, and its frames: count of them,
// size of each but the last, which may be shorter and then ends it. A
// message that lies in a receive buffer (datagram msg, up to end) can grow
// in place; one in the arena, at the arena's end.
type outMeta struct {
	dst      netip.AddrPort
	size     int
	count    int
	closed   bool
	inArena  bool
	msg, end int
}

func newBatchReader(us *udpServer, u *udpBatch, other netip.AddrPort) *batchReader {
	r := &batchReader{
		us: us, u: u, egress: u.conn, other: other,
		in:      make([]ipv6.Message, readBatch),
		inBufs:  make([][]byte, readBatch),
		inOOB:   make([][]byte, readBatch),
		relays:  make([]relayFrame, 0, readBatch*maxSegments),
		out:     make([]ipv6.Message, writeBatch),
		outMeta: make([]outMeta, writeBatch),
		outAddr: make([]net.UDPAddr, writeBatch),
		outIP:   make([][16]byte, writeBatch),
		outOOB:  make([][]byte, writeBatch),
		arena:   make([]byte, 0, arenaSize),
	}
	for i := range r.in {
		r.inBufs[i] = make([]byte, maxDatagram)
		r.inOOB[i] = make([]byte, oobSize)
		r.in[i].Buffers = [][]byte{r.inBufs[i]}
	}
	for i := range r.out {
		r.outOOB[i] = make([]byte, 0, oobSize)
		r.out[i].Buffers = make([][]byte, 1)
	}
	return r
}

func (r *batchReader) run() error {
	for {
		for i := range r.in {
			r.in[i].OOB = r.inOOB[i]
		}
		n, err := r.u.rw.ReadBatch(r.in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		r.handleBatch(n)
	}
}

// handleBatch takes the first n datagrams of r.in: control messages and
// STUN are answered as they come, one by one as ever (with their per-source
// budget); relay frames, exempt from that budget, are forwarded together.
func (r *batchReader) handleBatch(n int) {
	r.relays = r.relays[:0]
	for i := 0; i < n; i++ {
		m := &r.in[i]
		ua, ok := m.Addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		ap := ua.AddrPort()
		src := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		b := r.inBufs[i][:m.N]
		size, dst := parseOOB(m.OOB[:m.NN])
		if size <= 0 || size > len(b) {
			size = len(b)
		}
		other := r.other
		if other.Addr().IsUnspecified() {
			other = netip.AddrPortFrom(dst, other.Port()) // invalid without PKTINFO
		}
		if len(b) == 0 {
			r.us.handle(r.egress, other, b, src)
			continue
		}
		for off := 0; off < len(b); off += size {
			p := b[off:min(off+size, len(b))]
			if wire.IsRelay(p) {
				r.relays = append(r.relays, relayFrame{b: p, src: src, msg: i, off: off})
			} else {
				r.us.handle(r.egress, other, p, src)
			}
		}
	}
	if len(r.relays) > 0 {
		r.forwardBatch()
	}
}

// forwardBatch relays r.relays: the decisions for the whole batch at once
// (the registry's one read lock), then the sending without it.
func (r *batchReader) forwardBatch() {
	if !r.us.relays.decide(r.egress, r.relays) {
		return
	}
	var pkts, bytes uint64
	for i := range r.relays {
		f := &r.relays[i]
		if f.drop != nil {
			f.drop.Add(1)
			continue
		}
		pkts++
		bytes += uint64(len(f.b) - wire.RelayHeaderLen)
		if f.to != r.egress {
			// Another socket, or a TCP peer's stream.
			f.to.WriteToUDPAddrPort(f.b, f.dst)
			continue
		}
		r.add(f)
	}
	r.flush()
	if pkts > 0 {
		r.us.relays.counted(pkts, bytes)
	}
}

// add queues f for r.u.conn: onto the message being built when it goes to
// the same address and fits its segment size, else as a new message.
func (r *batchReader) add(f *relayFrame) {
	if r.nout > 0 && r.u.gso.Load() {
		i := r.nout - 1
		o, b := &r.outMeta[i], r.out[i].Buffers[0]
		if o.dst == f.dst && !o.closed && len(f.b) <= o.size && o.count < maxSegments && len(b)+len(f.b) <= maxSegmentBytes {
			switch {
			case !o.inArena && o.msg == f.msg && o.end == f.off:
				// The next frame of the same GRO datagram: it is
				// already in place behind the message.
				b = b[:len(b)+len(f.b)]
			case o.inArena && len(r.arena)+len(f.b) <= cap(r.arena):
				r.arena = append(r.arena, f.b...)
				b = r.arena[len(r.arena)-len(b)-len(f.b):]
			case !o.inArena && len(r.arena)+len(b)+len(f.b) <= cap(r.arena):
				start := len(r.arena)
				r.arena = append(append(r.arena, b...), f.b...)
				b = r.arena[start:]
				o.inArena = true
			default:
				b = nil
			}
			if b != nil {
				r.out[i].Buffers[0] = b
				o.count++
				o.msg, o.end = f.msg, f.off+len(f.b)
				o.closed = len(f.b) < o.size
				return
			}
		}
	}
	if r.nout == len(r.out) {
		r.flush()
	}
	i := r.nout
	r.nout++
	r.out[i].Buffers[0] = f.b
	r.out[i].Addr = r.udpAddr(i, f.dst)
	r.outMeta[i] = outMeta{dst: f.dst, size: len(f.b), count: 1, msg: f.msg, end: f.off + len(f.b)}
}

// udpAddr sets out[i]'s address to dst, reusing its memory.
func (r *batchReader) udpAddr(i int, dst netip.AddrPort) *net.UDPAddr {
	ua, ip := &r.outAddr[i], &r.outIP[i]
	a := dst.Addr()
	if r.u.v6 || !a.Unmap().Is4() {
		*ip = a.As16()
		ua.IP = ip[:16]
	} else {
		*(*[4]byte)(ip[:4]) = a.Unmap().As4()
		ua.IP = ip[:4]
	}
	ua.Port = int(dst.Port())
	ua.Zone = a.Zone()
	return ua
}

// flush writes the queued messages, several segments each where GSO
// allows, and frees the arena.
func (r *batchReader) flush() {
	ms := r.out[:r.nout]
	for i := range ms {
		ms[i].OOB = r.outOOB[i][:0]
		if o := &r.outMeta[i]; o.count > 1 {
			ms[i].OOB = putSegmentSize(r.outOOB[i], o.size)
		}
	}
	for i := 0; i < len(ms); {
		n, err := r.u.rw.WriteBatch(ms[i:], 0)
		if err == nil {
			i += max(n, 1)
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			break
		}
		if r.outMeta[i].count > 1 {
			// EIO: UDP_SEGMENT needs checksum offload, which the
			// device toward this destination lacks; stop asking for
			// GSO. EINVAL: a segment larger than the route's MTU,
			// which GSO cannot fragment. Either way this message's
			// frames go one by one.
			if errors.Is(err, syscall.EIO) && r.u.gso.Swap(false) {
				r.us.log.Warn("UDP GSO refused, relaying without it", "err", err)
			}
			r.writeSegments(i)
		}
		// Otherwise the first message failed (an unreachable address,
		// a firewall): it is lost, as a datagram may be; go on.
		i++
	}
	r.nout = 0
	r.arena = r.arena[:0]
}

// writeSegments sends out[i]'s frames one datagram each.
func (r *batchReader) writeSegments(i int) {
	o, b := &r.outMeta[i], r.out[i].Buffers[0]
	for len(b) > 0 {
		n := min(o.size, len(b))
		r.u.conn.WriteToUDPAddrPort(b[:n], o.dst)
		b = b[n:]
	}
}

// parseOOB reads a received datagram's control messages: its UDP GRO
// segment size (0 if not coalesced), and the address it was sent to (from
// IP_PKTINFO or IPV6_PKTINFO, if asked for; unmapped).
func parseOOB(oob []byte) (groSize int, dst netip.Addr) {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return groSize, dst
		}
		switch {
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4: // the kernel writes an int
			groSize = int(binary.NativeEndian.Uint32(data))
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 2:
			groSize = int(binary.NativeEndian.Uint16(data))
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex, spec_dst, then the header's destination.
			dst = netip.AddrFrom4([4]byte(data[8:12]))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			dst = netip.AddrFrom16([16]byte(data[:16])).Unmap()
		}
		oob = rest
	}
	return groSize, dst
}

// putSegmentSize writes a UDP_SEGMENT control message of size into oob's
// memory.
func putSegmentSize(oob []byte, size int) []byte {
	oob = oob[:unix.CmsgSpace(2)]
	clear(oob)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
	return oob
}
