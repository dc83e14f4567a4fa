package userspace

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/proxy"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/punchtun/punchtun/tunnel/config"
)

// Two stacks wired back to back (what one sends, the other receives), as
// two userspace peers are through the tunnel, without WireGuard: the
// proxies, forwards and pings of this package on their own.

// names is a Resolver of fixed names.
type names map[string]netip.Addr

func (n names) LookupHost(_ context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	if a, ok := n[host]; ok {
		return []netip.Addr{a}, nil
	}
	return nil, &net.DNSError{Err: "no such peer", Name: host, IsNotFound: true}
}

// wire carries what one stack sends to the other, a batch a Read, each
// batch written at once, as WireGuard does; and checks every packet: no
// longer than the MTU, and a TCP segment's checksums right (what a
// kernel peer would check).
type wire struct {
	mtu     int
	packets atomic.Uint64 // carried
	mu      sync.Mutex
	bad     error // the first packet found wrong
}

// run carries from's packets to to until from closes. A queue stands
// between them, as WireGuard's do: a stack handles a packet written to it
// at once, and the answer it sends must not wait for the writer.
func (w *wire) run(from, to tun.Device) {
	queue := make(chan [][]byte, 64)
	defer close(queue)
	go func() {
		for batch := range queue {
			to.Write(batch, 0)
		}
	}()
	bufs, sizes := make([][]byte, readBatch), make([]int, readBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	for {
		n, err := from.Read(bufs, sizes, 0)
		if err != nil {
			return
		}
		batch := make([][]byte, n)
		for i := range n {
			batch[i] = bytes.Clone(bufs[i][:sizes[i]])
			w.check(batch[i])
		}
		w.packets.Add(uint64(n))
		queue <- batch
	}
}

func (w *wire) check(pkt []byte) {
	var err error
	tcp := len(pkt) > 40 && (pkt[0]>>4 == 4 && pkt[9] == 6 || pkt[0]>>4 == 6 && pkt[6] == 6)
	if len(pkt) > w.mtu {
		err = fmt.Errorf("%d bytes, over the MTU", len(pkt))
	} else if tcp {
		_, err = checkSegment(pkt)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil && w.bad == nil {
		w.bad = fmt.Errorf("packet % x...: %w", pkt[:min(len(pkt), 60)], err)
	}
}

func (w *wire) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bad
}

const backToBackMTU = 1280

// backToBack is two stacks, of addresses a and b, wired to each other;
// aToB carries what a sends.
func backToBack(t *testing.T, addrA, addrB string) (a, b *Stack, aToB, bToA *wire) {
	a, err := NewStack([]netip.Addr{netip.MustParseAddr(addrA)}, backToBackMTU)
	if err != nil {
		t.Fatal(err)
	}
	b, err = NewStack([]netip.Addr{netip.MustParseAddr(addrB)}, backToBackMTU)
	if err != nil {
		t.Fatal(err)
	}
	// Each routes the other's address to one peer, the other.
	a.SetPeerRoutes([][]netip.Prefix{{hostPrefix(addrB)}})
	b.SetPeerRoutes([][]netip.Prefix{{hostPrefix(addrA)}})
	aToB, bToA = &wire{mtu: backToBackMTU}, &wire{mtu: backToBackMTU}
	go aToB.run(a.Device(), b.Device())
	go bToA.run(b.Device(), a.Device())
	t.Cleanup(func() { a.Device().Close(); b.Device().Close() })
	return a, b, aToB, bToA
}

// hostPrefix is the prefix of addr alone.
func hostPrefix(addr string) netip.Prefix {
	a := netip.MustParseAddr(addr)
	return netip.PrefixFrom(a, a.BitLen())
}

// udpEcho echoes UDP on loopback until the test ends.
func udpEcho(t *testing.T) int {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go echoDatagrams(pc)
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// echoDatagrams sends each datagram pc receives back, until pc closes.
func echoDatagrams(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}

// roundTrip sends a datagram on c until an answer comes (datagrams may
// be lost), within 5 s.
func roundTrip(t *testing.T, c net.Conn, datagram []byte) []byte {
	t.Helper()
	answer := make(chan []byte, 1)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	go func() {
		buf := make([]byte, 1500)
		n, _ := c.Read(buf)
		answer <- buf[:n]
	}()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		c.Write(datagram)
		select {
		case got := <-answer:
			if len(got) == 0 {
				t.Fatalf("no answer to % x within 5 s", datagram)
			}
			return got
		case <-tick.C:
		}
	}
}

func TestBackToBack(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	a, b, _, _ := backToBack(t, "100.64.0.1", "100.64.0.2")
	echo := udpEcho(t)
	fwd, err := StartForwards(log, b, []config.Forward{{Proto: "udp", Port: 53, Target: fmt.Sprintf("127.0.0.1:%d", echo)}})
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	socks := ServeSOCKS5(log, ln, &Dialer{Stack: a, Resolver: names{"bob": netip.MustParseAddr("100.64.0.2")}})
	defer socks.Close()

	// UDP ASSOCIATE, by name, to b's forwarded udp:53.
	c, err := net.Dial("tcp", socks.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	resp := make([]byte, 2+10) // the method chosen, then the reply
	if _, err := io.ReadFull(c, resp); err != nil || !bytes.Equal(resp[:2], []byte{5, 0}) || resp[3] != repSucceeded || resp[5] != atypIPv4 {
		t.Fatalf("UDP ASSOCIATE: % x, %v", resp, err)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(resp[6:10])), uint16(resp[10])<<8|uint16(resp[11]))
	uc, err := net.Dial("udp", relay.String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	got := roundTrip(t, uc, append([]byte{0, 0, 0, atypDomain, 3, 'b', 'o', 'b', 0, 53}, "datagram"...))
	want := append(appendAddr([]byte{0, 0, 0}, netip.MustParseAddrPort("100.64.0.2:53")), "datagram"...)
	if !bytes.Equal(got, want) {
		t.Errorf("UDP through SOCKS5: % x; want % x", got, want)
	}

	// CONNECT to a port nothing listens on: refused (reply 5), at once.
	d, _ := proxy.SOCKS5("tcp", socks.Addr().String(), nil, proxy.Direct)
	if _, err := d.Dial("tcp", "bob:9"); err == nil {
		t.Error("CONNECT to a closed port succeeded")
	}
	// An unknown name: host unreachable.
	if _, err := d.Dial("tcp", "carol:22"); err == nil {
		t.Error("CONNECT to an unknown name succeeded")
	}
}

// TestPingAnswered writes an echo request to the stack's address into
// its device, as the tunnel delivers one, and reads the reply it sends.
func TestPingAnswered(t *testing.T) {
	s, err := NewStack([]netip.Addr{netip.MustParseAddr("100.64.0.2")}, 1280)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Device().Close()
	icmp := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'p', 'i', 'n', 'g'}
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp))
	ip := []byte{0x45, 0, 0, byte(20 + len(icmp)), 0, 0, 0, 0, 64, 1, 0, 0, 100, 64, 0, 1, 100, 64, 0, 2}
	binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip))
	// The reader first: the stack answers within Write, which waits
	// until the answer is read (as wireguard-go's reader always is).
	bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	done := make(chan error, 1)
	go func() { _, err := s.Device().Read(bufs, sizes, 0); done <- err }()
	if _, err := s.Device().Write([][]byte{append(ip, icmp...)}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		reply := bufs[0][:sizes[0]]
		if err != nil || len(reply) != len(ip)+len(icmp) || reply[9] != 1 || reply[20] != 0 ||
			!bytes.Equal(reply[16:20], []byte{100, 64, 0, 1}) || !bytes.HasSuffix(reply, []byte("ping")) {
			t.Errorf("reply % x, %v: want an echo reply to 100.64.0.1", reply, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no echo reply within 5 s")
	}
}

// inetChecksum is the Internet checksum of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// TestBackToBackTCP sends 4 MiB each way over TCP between two stacks,
// over IPv4 and IPv6: every packet on the wire fits the MTU and has its
// checksums right, the senders handed over superpackets (GSO: far fewer
// segments sent than packets on the wire), and the receivers took the
// packets in joined (GRO: far fewer segments received).
func TestBackToBackTCP(t *testing.T) {
	for _, addrs := range [][2]string{{"100.64.0.1", "100.64.0.2"}, {"fd00::1", "fd00::2"}} {
		t.Run(addrs[0], func(t *testing.T) {
			a, b, aToB, bToA := backToBack(t, addrs[0], addrs[1])
			ln, err := a.ListenTCP(netip.AddrPortFrom(netip.MustParseAddr(addrs[0]), 5201))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			const size = 4 << 20
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i*7 + i>>12)
			}
			// exchange writes data on c while it reads as much, and checks it.
			exchange := func(c net.Conn) error {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				wrote := make(chan error, 1)
				go func() { _, err := c.Write(data); wrote <- err }()
				got := make([]byte, size)
				if _, err := io.ReadFull(c, got); err != nil {
					return fmt.Errorf("read: %w", err)
				}
				if !bytes.Equal(got, data) {
					return fmt.Errorf("the data arrived changed")
				}
				return <-wrote
			}
			served := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					served <- err
					return
				}
				served <- exchange(c)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := b.DialTCP(ctx, netip.AddrPortFrom(netip.MustParseAddr(addrs[0]), 5201))
			if err != nil {
				t.Fatal(err)
			}
			if err := exchange(c); err != nil {
				t.Fatalf("dialer: %v", err)
			}
			if err := <-served; err != nil {
				t.Fatalf("listener: %v", err)
			}
			for _, w := range []*wire{aToB, bToA} {
				if err := w.err(); err != nil {
					t.Error(err)
				}
			}
			for _, side := range []struct {
				name    string
				s       *Stack
				out, in *wire
			}{{"a", a, aToB, bToA}, {"b", b, bToA, aToB}} {
				tcp := side.s.stack.Stats().TCP
				sent, received := tcp.SegmentsSent.Value(), tcp.ValidSegmentsReceived.Value()
				t.Logf("%s: %d segments sent as %d packets; %d packets received as %d segments",
					side.name, sent, side.out.packets.Load(), side.in.packets.Load(), received)
				if sent*4 > side.out.packets.Load() {
					t.Errorf("%s sent %d segments for %d packets: no GSO", side.name, sent, side.out.packets.Load())
				}
				if received*4 > side.in.packets.Load() {
					t.Errorf("%s received %d segments from %d packets: no GRO", side.name, received, side.in.packets.Load())
				}
			}
		})
	}
}
