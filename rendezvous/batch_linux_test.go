//go:build linux

package rendezvous

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// testDatagram is one entry of a hand-made receive batch: frames from src,
// coalesced as UDP GRO hands them over when there are several.
type testDatagram struct {
	src    netip.AddrPort
	frames [][]byte
}

// groControl is the control message of a GRO datagram of segment size.
func groControl(size int) []byte {
	oob := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(oob[unix.CmsgLen(0):], uint32(size))
	return oob
}

// fill puts ds into r's receive batch as recvmmsg would, returning their
// number.
func (r *batchReader) fill(ds []testDatagram) int {
	for i, d := range ds {
		m := &r.in[i]
		b := r.inBufs[i][:0]
		for _, f := range d.frames {
			b = append(b, f...)
		}
		m.N, m.NN = len(b), 0
		m.OOB = r.inOOB[i]
		if len(d.frames) > 1 {
			m.NN = copy(m.OOB, groControl(len(d.frames[0])))
		}
		m.Addr = net.UDPAddrFromAddrPort(d.src)
	}
	return len(ds)
}

// recvFrames reads relayed frames until none comes for a while.
func (c *client) recvFrames() (from []key.Key, pkts [][]byte) {
	for {
		k, p, ok := c.recvRelay(300 * time.Millisecond)
		if !ok {
			return from, pkts
		}
		from, pkts = append(from, k), append(pkts, p)
	}
}

// TestBatchForward feeds one receive batch with frames from registered,
// unregistered and not mutual sources, some coalesced by GRO, some of them
// sent on with GSO, and a STUN request among them: each frame is relayed
// or counted as dropped, and the STUN request is answered.
func TestBatchForward(t *testing.T) {
	// An IPv4 socket, and a dual-stack IPv6 one that sees IPv4 peers
	// as v4-mapped addresses and must write to them so.
	for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6unspecified} {
		t.Run(ip.String(), func(t *testing.T) { testBatchForward(t, ip) })
	}
}

func testBatchForward(t *testing.T, ip net.IP) {
	priv, _ := key.NewPrivate()
	s := NewServer(Config{PrivateKey: priv, Relay: true, Logger: slog.New(slog.DiscardHandler)})
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); s.Close() })
	go s.Serve(conn, netip.AddrPort{})
	srv := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), conn.LocalAddr().(*net.UDPAddr).AddrPort().Port())

	a, b, eve, stranger := newClient(t, srv, priv.Public()), newClient(t, srv, priv.Public()), newClient(t, srv, priv.Public()), newClient(t, srv, priv.Public())
	a.register(b.pub())
	b.register(a.pub())
	eve.register(a.pub()) // a does not list eve

	u, err := newUDPBatch(conn)
	if err != nil {
		t.Fatal(err)
	}
	r := newBatchReader(s.udp, u, netip.AddrPort{})
	if want := ip.To4() == nil; u.v6 != want {
		t.Fatalf("socket taken for IPv6 %v, want %v", u.v6, want)
	}

	pkt := func(n int, fill byte) []byte {
		p := bytes.Repeat([]byte{fill}, n)
		copy(p, []byte{4, 0, 0, 0})
		return p
	}
	frame := func(to key.Key, p []byte) []byte { return wire.AppendRelay(nil, to, p) }
	_, stun := nat.NewBindingRequest()
	batch := []testDatagram{
		// a's GSO batch to b, coalesced by GRO: two full frames and a
		// shorter one that ends it.
		{a.addr(), [][]byte{frame(b.pub(), pkt(100, 1)), frame(b.pub(), pkt(100, 2)), frame(b.pub(), pkt(60, 3))}},
		{stranger.addr(), [][]byte{frame(b.pub(), pkt(100, 4)), frame(b.pub(), pkt(100, 5))}},
		{a.addr(), [][]byte{frame(b.pub(), pkt(100, 6))}},
		{eve.addr(), [][]byte{frame(a.pub(), pkt(100, 7))}},
		{a.addr(), [][]byte{stun}},
		// b's two frames to a, separate datagrams: sent on as one
		// GSO message from the arena.
		{b.addr(), [][]byte{frame(a.pub(), pkt(80, 8))}},
		{b.addr(), [][]byte{frame(a.pub(), pkt(80, 9))}},
		{stranger.addr(), [][]byte{frame(a.pub(), pkt(80, 10))}},
	}
	relayed, unreg, notMutual := s.Stats.RelayPackets.Load(), s.Stats.DropUnregistered.Load(), s.Stats.DropNotMutual.Load()
	r.handleBatch(r.fill(batch))

	if got := s.Stats.RelayPackets.Load() - relayed; got != 6 {
		t.Errorf("relayed %d frames, want 6", got)
	}
	if got := s.Stats.DropUnregistered.Load() - unreg; got != 3 {
		t.Errorf("%d frames dropped as from unregistered sources, want 3", got)
	}
	if got := s.Stats.DropNotMutual.Load() - notMutual; got != 1 {
		t.Errorf("%d frames dropped as not mutual, want 1", got)
	}

	check := func(name string, c *client, from key.Key, want ...[]byte) {
		t.Helper()
		keys, pkts := c.recvFrames()
		if len(pkts) != len(want) {
			t.Fatalf("%s got %d frames, want %d", name, len(pkts), len(want))
		}
		for i := range want {
			if keys[i] != from || !bytes.Equal(pkts[i], want[i]) {
				t.Errorf("%s frame %d: from %v, %d bytes of %d; want from %v, %d bytes of %d",
					name, i, keys[i], len(pkts[i]), pkts[i][len(pkts[i])-1], from, len(want[i]), want[i][len(want[i])-1])
			}
		}
	}
	check("b", b, a.pub(), pkt(100, 1), pkt(100, 2), pkt(60, 3), pkt(100, 6))
	check("a", a, b.pub(), pkt(80, 8), pkt(80, 9))
	check("eve", eve, key.Key{})
	check("stranger", stranger, key.Key{})
	if s.Stats.STUN.Load() != 1 {
		t.Errorf("answered %d STUN requests, want 1", s.Stats.STUN.Load())
	}
}

// raceEnabled is set in race builds, by an init under the race build tag.
var raceEnabled bool

// TestBatchForwardAllocs: relaying a batch allocates nothing.
func TestBatchForwardAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are not counted under the race detector")
	}
	priv, _ := key.NewPrivate()
	s := NewServer(Config{PrivateKey: priv, Relay: true, Logger: slog.New(slog.DiscardHandler)})
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); s.Close() })
	go s.Serve(conn, netip.AddrPort{})
	srv := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	a, b := newClient(t, srv, priv.Public()), newClient(t, srv, priv.Public())
	a.register(b.pub())
	b.register(a.pub())

	u, err := newUDPBatch(conn)
	if err != nil {
		t.Fatal(err)
	}
	r := newBatchReader(s.udp, u, netip.AddrPort{})
	f := wire.AppendRelay(nil, b.pub(), make([]byte, 1200))
	batch := []testDatagram{{a.addr(), [][]byte{f, f, f, f}}, {a.addr(), [][]byte{f}}, {a.addr(), [][]byte{f, f}}}
	n := r.fill(batch)
	addrs := make([]net.Addr, n)
	for i := range addrs {
		addrs[i] = r.in[i].Addr
	}
	before := s.Stats.RelayPackets.Load()
	allocs := testing.AllocsPerRun(100, func() {
		// fill again, without allocating: the keys were rewritten.
		for i, d := range batch {
			b := r.inBufs[i][:0]
			for _, f := range d.frames {
				b = append(b, f...)
			}
			r.in[i].Addr = addrs[i]
		}
		r.handleBatch(n)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch, want 0", allocs)
	}
	if got := s.Stats.RelayPackets.Load() - before; got != 101*7 {
		t.Errorf("relayed %d frames, want %d", got, 101*7)
	}
}
