package userspace

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// FuzzTCPSegmenter cuts whatever it is given as a superpacket: what the
// segmenter takes comes out as segments of at most mss bytes of data,
// with right lengths and checksums, carrying the superpacket's data in
// order; nothing panics.
func FuzzTCPSegmenter(f *testing.F) {
	a4, b4 := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	a6, b6 := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	f.Add(superPacket(a4, b4, 1, tcpACK|tcpPSH, make([]byte, 300)), uint16(128))
	f.Add(superPacket(a6, b6, 0xffffff00, tcpACK|tcpFIN|tcpCWR, make([]byte, 200)), uint16(1))
	f.Add(superPacket(a4, b4, 1, tcpACK, nil), uint16(0))
	withOptions := superPacket(a4, b4, 1, tcpACK, make([]byte, 100))
	withOptions = append(append(withOptions[:20:20], 1, 1, 1, 1), withOptions[20:]...) // 4 bytes of IP options
	withOptions[0] = 0x46
	f.Add(withOptions, uint16(36))
	f.Fuzz(func(t *testing.T, pkt []byte, mss uint16) {
		var s tcpSegmenter
		if !s.start(bytes.Clone(pkt), int(mss)) {
			return
		}
		hdrLen, data := s.hdrLen, pkt[s.hdrLen:]
		dst := make([]byte, len(pkt))
		var got []byte
		for i := 0; s.pending(); i++ {
			if i > len(data) {
				t.Fatalf("%d segments for %d bytes of data", i, len(data))
			}
			n := s.cut(dst)
			if n == 0 {
				t.Fatalf("segment %d: did not fit %d bytes", i, len(dst))
			}
			if mss > 0 && n-hdrLen > int(mss) {
				t.Fatalf("segment %d: %d bytes of data, MSS %d", i, n-hdrLen, mss)
			}
			if _, err := checkSegment(dst[:n]); err != nil {
				t.Fatalf("segment %d: %v", i, err)
			}
			got = append(got, dst[hdrLen:n]...)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("the segments carry %d bytes, not the superpacket's %d", len(got), len(data))
		}
	})
}

// echoRequest is a ping from src to dst with size bytes of data.
func echoRequest(src, dst netip.Addr, size int) []byte {
	icmp := append([]byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}, make([]byte, size)...)
	if src.Is6() {
		icmp[0] = 128
	}
	return icmpPacket(src, dst, icmp)
}

// fuzzOffset is where packets start in the buffers Write is given, as
// wireguard-go leaves room for its own header.
const fuzzOffset = 16

// batchOf joins packets into one fuzz input, each after its length.
func batchOf(pkts ...[]byte) []byte {
	var b []byte
	for _, p := range pkts {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

// splitBatch is batchOf undone, for inputs of any shape: at most
// readBatch*2 packets, each at fuzzOffset of its buffer.
func splitBatch(b []byte) [][]byte {
	var bufs [][]byte
	for len(b) >= 2 && len(bufs) < 2*readBatch {
		n := min(int(binary.BigEndian.Uint16(b)), len(b)-2)
		bufs = append(bufs, append(make([]byte, fuzzOffset), b[2:2+n]...))
		b = b[2+n:]
	}
	return bufs
}

// FuzzDeviceWrite writes batches of whatever a peer may tunnel into a
// stack with a TCP listener and a UDP echo, as WireGuard does, and reads
// what the stack sends in reply: Write takes every batch whole, drops
// no more packets than it was given, and every packet the stack sends
// fits the MTU with right checksums; nothing panics or hangs.
func FuzzDeviceWrite(f *testing.F) {
	a4, b4 := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	a6, b6 := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	s, err := NewStack([]netip.Addr{b4, b6}, 1280)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Device().Close() })
	// a4's peer routes a LAN behind it too; 100.64.0.3 is another peer's.
	c4 := netip.MustParseAddr("100.64.0.3")
	s.SetPeerRoutes([][]netip.Prefix{{hostPrefix("100.64.0.1"), hostPrefix("fd00::1"), netip.MustParsePrefix("192.168.5.0/24")}, {hostPrefix("100.64.0.3")}})
	for _, a := range []netip.Addr{b4, b6} {
		ln, err := s.ListenTCP(netip.AddrPortFrom(a, 5201))
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { ln.Close() })
		pc, err := s.ListenUDP(netip.AddrPortFrom(a, 53))
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { pc.Close() })
		go echoDatagrams(pc)
	}

	ping, ping6 := echoRequest(a4, b4, 100), echoRequest(a6, b6, 100)
	syn := superPacket(a4, b4, 1000, 0x02, nil)
	binary.BigEndian.PutUint16(syn[22:], 5201)
	copy(syn[40:], []byte{2, 4, 0, 48, 3, 3, 14, 4, 1, 1, 1, 0}) // MSS 48, window scale 14, SACK permitted
	syn6 := superPacket(a6, b6, 1000, 0x02, nil)
	binary.BigEndian.PutUint16(syn6[42:], 5201)
	segments := [][]byte{}
	for i := range 4 {
		segments = append(segments, superPacket(a4, b4, uint32(1+1000*i), tcpACK, make([]byte, 1000)))
	}
	f.Add(batchOf(ping, ping6, syn, syn6))
	f.Add(batchOf(fragments4(ping, 8)[0], fragments6(ping6, 16)[1], behindDestinationOptions(ping6)))
	f.Add(batchOf(packetTooBig(a4, b4, a4, 5201, 40000, 0), packetTooBig(a6, b6, a6, 5201, 40000, 1000)))
	f.Add(batchOf(append(segments, []byte{0x45}, nil, make([]byte, 40))...))
	sent, sent6 := superPacket(b4, a4, 1, tcpACK, nil), superPacket(b6, a6, 1, tcpACK, nil)
	f.Add(batchOf(unreachable(a4, sent), unreachable(c4, sent), unreachable(netip.MustParseAddr("192.168.5.1"), sent), unreachable(a6, sent6)))
	f.Add(batchOf(fragments6(behindDestinationOptions(ping6), 8)...))
	bigPing := echoRequest(a4, b4, 1300)
	bigPing[5] = 3 // an IPv4 ID of its own: not seed 1's fragment's
	binary.BigEndian.PutUint16(bigPing[10:], 0)
	binary.BigEndian.PutUint16(bigPing[10:], inetChecksum(bigPing[:20]))
	f.Add(batchOf(append(fragments4(bigPing, 1200), fragments6(echoRequest(a6, b6, 1300), 1200)...)...))

	bufs, sizes := make([][]byte, readBatch), make([]int, readBatch)
	for i := range bufs {
		bufs[i] = make([]byte, fuzzOffset+65535)
	}
	dev := s.dev
	// read reads what the stack sent and checks it.
	read := func(t *testing.T) {
		n, err := dev.Read(bufs, sizes, fuzzOffset)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		for i, pkt := range bufs[:n] {
			pkt = pkt[fuzzOffset : fuzzOffset+sizes[i]]
			if len(pkt) > 1280 {
				t.Fatalf("the stack sent %d bytes, over the MTU: % x...", len(pkt), pkt[:60])
			}
			if len(pkt) > 40 && (pkt[0]>>4 == 4 && pkt[9] == 6 || pkt[0]>>4 == 6 && pkt[6] == 6) {
				if _, err := checkSegment(pkt); err != nil {
					t.Fatalf("the stack sent % x: %v", pkt, err)
				}
			}
		}
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()

	f.Fuzz(func(t *testing.T, input []byte) {
		batch := splitBatch(input)
		dropped := dev.Dropped.Load()
		wrote := make(chan error, 1)
		go func() {
			n, err := dev.Write(batch, fuzzOffset)
			if err == nil && n != len(batch) {
				err = fmt.Errorf("wrote %d of %d", n, len(batch))
			}
			wrote <- err
		}()
		// Read as WireGuard does, beside Write: the stack may answer
		// more packets than its queue holds within one Write.
		deadline := time.After(10 * time.Second)
		for done := false; !done || len(dev.ep.out) > 0 || dev.seg.pending(); {
			for len(dev.ep.out) > 0 || dev.seg.pending() {
				read(t)
			}
			select {
			case err := <-wrote:
				if err != nil {
					t.Fatalf("Write: %v", err)
				}
				done = true
			case <-tick.C:
			case <-deadline:
				t.Fatal("Write did not return within 10 s")
			}
		}
		if d := dev.Dropped.Load() - dropped; d > uint64(len(batch)) {
			t.Fatalf("%d dropped of a batch of %d", d, len(batch))
		}
	})
}
