package tundev

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// pipeTUN is a TUN device made of a pipe: one write, one packet. Its file
// is in Go's poller, as a real TUN's is, so a read deadline wakes a read.
type pipeTUN struct {
	tun.Device
	r, w *os.File
}

func newPipeTUN(t *testing.T) *pipeTUN {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return &pipeTUN{r: r, w: w}
}

func (p *pipeTUN) File() *os.File { return p.r }

func (p *pipeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := p.r.Read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

// ipv4To is a 20-byte IPv4 header to dst, with id to tell packets apart.
func ipv4To(dst string, id byte) []byte {
	p := make([]byte, 20)
	p[0], p[5] = 0x45, id
	a := netip.MustParseAddr(dst).As4()
	copy(p[16:], a[:])
	return p
}

// TestHoldUntilMember: a packet to an address of the network that no peer
// holds is held and reported; one outside the network, or to a static
// peer, passes; when the member comes, the reader blocked in the TUN's
// read is woken and gets the held packets, in order, and never an error.
func TestHoldUntilMember(t *testing.T) {
	dev := newPipeTUN(t)
	misses := make(chan netip.Addr, 16)
	h := newHoldingTUN(dev, dev, func(dst netip.Addr) { misses <- dst })
	b := &Device{hold: h}
	b.SetNetwork([]netip.Prefix{netip.MustParsePrefix("100.64.0.0/24")}, []netip.Prefix{netip.MustParsePrefix("100.64.0.200/32")})

	got := make(chan []byte, 16)
	errs := make(chan error, 1)
	go func() {
		bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
		for {
			n, err := h.Read(bufs, sizes, 0)
			if err != nil {
				errs <- err
				return
			}
			for i := range n {
				got <- append([]byte(nil), bufs[i][:sizes[i]]...)
			}
		}
	}()
	next := func() []byte {
		t.Helper()
		select {
		case p := <-got:
			return p
		case err := <-errs:
			t.Fatalf("Read failed: %v", err)
		case <-time.After(2 * time.Second):
			t.Fatal("no packet within 2 s")
		}
		return nil
	}
	send := func(p []byte) {
		if _, err := dev.w.Write(p); err != nil {
			t.Fatal(err)
		}
	}

	send(ipv4To("192.0.2.1", 1)) // outside the network
	if p := next(); p[5] != 1 {
		t.Fatalf("got packet %d, want 1", p[5])
	}
	send(ipv4To("100.64.0.200", 2)) // a static peer's
	if p := next(); p[5] != 2 {
		t.Fatalf("got packet %d, want 2", p[5])
	}
	for id := byte(3); id < 3+heldPerDestination+2; id++ { // to a member not yet known
		send(ipv4To("100.64.0.7", id))
		if dst := <-misses; dst != netip.MustParseAddr("100.64.0.7") {
			t.Fatalf("miss for %v", dst)
		}
	}
	select {
	case p := <-got:
		t.Fatalf("packet %d to an unknown member passed", p[5])
	case <-time.After(100 * time.Millisecond):
	}
	if d := h.Dropped.Load(); d != 2 {
		t.Errorf("%d dropped, want 2 (over %d per destination)", d, heldPerDestination)
	}

	// The reader is blocked in the pipe's read: the member's arrival
	// wakes it.
	start := time.Now()
	b.AddDestinations([]netip.Addr{netip.MustParseAddr("100.64.0.7")})
	for id := byte(3); id < 3+heldPerDestination; id++ {
		if p := next(); p[5] != id {
			t.Fatalf("released packet %d, want %d", p[5], id)
		}
	}
	if waited := time.Since(start); waited > 500*time.Millisecond {
		t.Errorf("released after %v: the blocked read was not woken", waited)
	}
	// The deadline is cleared: reads wait again, and what comes passes.
	send(ipv4To("100.64.0.7", 9))
	if p := next(); p[5] != 9 {
		t.Fatalf("got packet %d, want 9", p[5])
	}
	// Gone again: held again.
	b.RemoveDestinations([]netip.Addr{netip.MustParseAddr("100.64.0.7")})
	send(ipv4To("100.64.0.7", 10))
	<-misses
}

func TestHoldBounds(t *testing.T) {
	pipe := newPipeTUN(t)
	h := newHoldingTUN(pipe, pipe, nil)
	b := &Device{hold: h}
	b.SetNetwork([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, nil)
	for i := range heldDestinations + 5 {
		dst := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		h.hold(dst, ipv4To(dst.String(), 0))
	}
	if len(h.held) != heldDestinations || h.Dropped.Load() != 5 {
		t.Errorf("%d destinations held, %d dropped; want %d and 5", len(h.held), h.Dropped.Load(), heldDestinations)
	}
	// Held too long: let go when the next destination comes.
	for _, hp := range h.held {
		hp.since = time.Now().Add(-heldFor - time.Second)
	}
	h.hold(netip.MustParseAddr("10.1.0.1"), ipv4To("10.1.0.1", 0))
	if len(h.held) != 1 {
		t.Errorf("%d destinations held after expiry, want 1", len(h.held))
	}
}

// chanTUN is a device with no file, as the userspace stack is: its Read
// waits on a channel, and Wake (Waker) makes it return with nothing.
type chanTUN struct {
	tun.Device
	wake    chan struct{}
	reading chan struct{} // a Read is about to wait
	closed  chan struct{}
}

func (c *chanTUN) File() *os.File { return nil }
func (c *chanTUN) Close() error {
	close(c.closed)
	return nil
}
func (c *chanTUN) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}
func (c *chanTUN) Read([][]byte, []int, int) (int, error) {
	c.reading <- struct{}{}
	select {
	case <-c.wake:
		return 0, nil
	case <-c.closed:
		return 0, os.ErrClosed
	}
}

// TestWakerWoken: a device with no file is woken through Waker, across the
// batching wrapper, for a packet injected (a policy document gossiped in
// the tunnel) and for packets held until their member came; without it
// they waited for the device's next packet, on an idle userspace peer
// for ever.
func TestWakerWoken(t *testing.T) {
	dev := &chanTUN{wake: make(chan struct{}, 1), reading: make(chan struct{}, 8), closed: make(chan struct{})}
	d := New(dev, func(d tun.Device) tun.Device { return d }, nil)
	stopped := make(chan struct{})
	defer func() { d.Close(); <-stopped }()
	d.SetNetwork([]netip.Prefix{netip.MustParsePrefix("100.64.0.0/24")}, nil)
	got := make(chan byte, 8)
	go func() {
		defer close(stopped)
		bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
		for {
			n, err := d.Read(bufs, sizes, 0)
			if err != nil {
				return
			}
			for i := range n {
				got <- bufs[i][5]
			}
		}
	}()
	want := func(id byte) {
		t.Helper()
		select {
		case p := <-got:
			if p != id {
				t.Fatalf("got packet %d, want %d", p, id)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("packet %d not read within 2 s: the blocked read was not woken", id)
		}
	}
	<-dev.reading
	d.Inject(ipv4To("100.64.0.9", 1))
	want(1)
	<-dev.reading
	d.hold.hold(netip.MustParseAddr("100.64.0.7"), ipv4To("100.64.0.7", 2))
	d.AddDestinations([]netip.Addr{netip.MustParseAddr("100.64.0.7")})
	want(2)
}
