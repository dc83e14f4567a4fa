package userspace

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TCP flags, as on the wire.
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpCWR = 0x80
)

// superPacket builds a TCP packet from src to dst with a 12-byte option
// (as timestamps take), sequence number seq, flags, and data, its TCP
// checksum left partial as gVisor leaves it for a link that segments.
func superPacket(src, dst netip.Addr, seq uint32, flags byte, data []byte) []byte {
	tcp := make([]byte, 32)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 777)
	tcp[12] = 8 << 4 // 32 bytes of header
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 512)
	copy(tcp[20:], []byte{1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8})
	binary.BigEndian.PutUint16(tcp[16:], 0xbeef) // not a checksum: the segmenter's to make
	var ip []byte
	if src.Is4() {
		ip = make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, 6
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)+len(data)))
		binary.BigEndian.PutUint16(ip[4:], 1000)   // ID
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		copy(ip[12:], src.AsSlice())
		copy(ip[16:], dst.AsSlice())
	} else {
		ip = make([]byte, 40)
		ip[0], ip[6], ip[7] = 0x60, 6, 64
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)+len(data)))
		copy(ip[8:], src.AsSlice())
		copy(ip[24:], dst.AsSlice())
	}
	return append(append(ip, tcp...), data...)
}

// checkSegment checks seg's lengths and checksums (computed here, not by
// gVisor), and returns its IP header length.
func checkSegment(seg []byte) (ipLen int, err error) {
	var pseudo []byte
	switch seg[0] >> 4 {
	case 4:
		ipLen = int(seg[0]&0xf) * 4
		if got := int(binary.BigEndian.Uint16(seg[2:])); got != len(seg) {
			return 0, fmt.Errorf("IPv4 total length %d, segment %d bytes", got, len(seg))
		}
		if inetChecksum(seg[:ipLen]) != 0 {
			return 0, fmt.Errorf("bad IPv4 header checksum")
		}
		pseudo = append(append([]byte{}, seg[12:20]...), 0, 6, 0, 0)
	case 6:
		ipLen = 40
		if got := int(binary.BigEndian.Uint16(seg[4:])); got != len(seg)-40 {
			return 0, fmt.Errorf("IPv6 payload length %d, segment %d bytes", got, len(seg))
		}
		pseudo = append(append([]byte{}, seg[8:40]...), 0, 0, 0, 0, 0, 0, 0, 6)
	default:
		return 0, fmt.Errorf("not IP: % x", seg[:1])
	}
	tcpLen := len(seg) - ipLen
	if seg[0]>>4 == 4 {
		binary.BigEndian.PutUint16(pseudo[10:], uint16(tcpLen))
	} else {
		binary.BigEndian.PutUint32(pseudo[32:], uint32(tcpLen))
	}
	if inetChecksum(append(pseudo, seg[ipLen:]...)) != 0 {
		return 0, fmt.Errorf("bad TCP checksum")
	}
	return ipLen, nil
}

func TestTCPSegmenter(t *testing.T) {
	const mss = 1228
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
		data     int
		flags    byte
	}{
		{"IPv4, last segment short", netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2"), 8*mss + 176, tcpACK | tcpPSH | tcpFIN | tcpCWR},
		{"IPv6, last segment short", netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), 20*mss + 1, tcpACK | tcpPSH},
		{"IPv4, segments all full", netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2"), 3 * mss, tcpACK | tcpPSH},
		{"IPv4, the largest", netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2"), 65535 - 160 - 1, tcpACK},
		{"IPv6, one segment", netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), 100, tcpACK | tcpPSH},
		{"IPv4, no data (an ACK)", netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2"), 0, tcpACK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, tc.data)
			for i := range data {
				data[i] = byte(i * 7)
			}
			const seq0 = 0xfffff000 // wraps within the superpacket
			pkt := superPacket(tc.src, tc.dst, seq0, tc.flags, data)
			var s tcpSegmenter
			if !s.start(pkt, mss) {
				t.Fatal("not taken for a TCP packet")
			}
			want := max(1, (tc.data+mss-1)/mss)
			var got []byte
			dst := make([]byte, 1500)
			for i := 0; s.pending(); i++ {
				if i == want {
					t.Fatalf("more than %d segments", want)
				}
				n := s.cut(dst)
				seg := dst[:n]
				ipLen, err := checkSegment(seg)
				if err != nil {
					t.Fatalf("segment %d: %v", i, err)
				}
				last := i == want-1
				wantData := mss
				if last {
					wantData = tc.data - i*mss
				}
				if n != ipLen+32+wantData {
					t.Fatalf("segment %d: %d bytes, want %d", i, n, ipLen+32+wantData)
				}
				tcp := seg[ipLen:]
				if seq := binary.BigEndian.Uint32(tcp[4:]); seq != seq0+uint32(i*mss) {
					t.Errorf("segment %d: sequence number %#x, want %#x", i, seq, seq0+uint32(i*mss))
				}
				wantFlags := tc.flags
				if !last {
					wantFlags &^= tcpFIN | tcpPSH
				}
				if i > 0 {
					wantFlags &^= tcpCWR
				}
				if tcp[13] != wantFlags {
					t.Errorf("segment %d: flags %#x, want %#x", i, tcp[13], wantFlags)
				}
				if !bytes.Equal(tcp[:4], pkt[ipLen:ipLen+4]) || !bytes.Equal(tcp[8:13], pkt[ipLen+8:ipLen+13]) || !bytes.Equal(tcp[14:16], pkt[ipLen+14:ipLen+16]) || !bytes.Equal(tcp[18:32], pkt[ipLen+18:ipLen+32]) {
					t.Errorf("segment %d: ports, ACK, window or options changed", i)
				}
				if tc.src.Is4() {
					if id := binary.BigEndian.Uint16(seg[4:]); id != 1000+uint16(i) {
						t.Errorf("segment %d: IPv4 ID %d, want %d", i, id, 1000+i)
					}
				}
				got = append(got, tcp[32:]...)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("the segments' data is not the superpacket's")
			}
		})
	}
}

func TestTCPSegmenterRefuses(t *testing.T) {
	var s tcpSegmenter
	udp := superPacket(netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2"), 1, tcpACK, nil)
	udp[9] = 17
	for name, pkt := range map[string][]byte{
		"UDP":              udp,
		"short":            udp[:19],
		"not IP":           make([]byte, 60),
		"TCP header short": superPacket(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), 1, tcpACK, nil)[:50],
	} {
		if s.start(pkt, 1000) || s.pending() {
			t.Errorf("%s: taken", name)
		}
	}
	// A segment that does not fit is not written.
	pkt := superPacket(netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2"), 1, tcpACK, make([]byte, 3000))
	if !s.start(pkt, 1000) {
		t.Fatal("not taken")
	}
	if n := s.cut(make([]byte, 1000)); n != 0 {
		t.Errorf("cut into a buffer too short: %d bytes", n)
	}
}

// TestDeviceDrops: what is not an IP packet is dropped and counted, and
// the rest of the batch still goes in.
func TestDeviceDrops(t *testing.T) {
	s, err := NewStack([]netip.Addr{netip.MustParseAddr("100.64.0.2")}, 1280)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Device().Close()
	ping := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 100, 64, 0, 1, 100, 64, 0, 2, 8, 0, 0, 0, 0, 1, 0, 1}
	binary.BigEndian.PutUint16(ping[10:], inetChecksum(ping[:20]))
	binary.BigEndian.PutUint16(ping[22:], inetChecksum(ping[20:]))
	n, err := s.Device().Write([][]byte{{0x00, 1, 2, 3}, make([]byte, 30), ping[:19], ping}, 0)
	if n != 4 || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if got := s.dev.Dropped.Load(); got != 3 {
		t.Errorf("%d dropped; want 3", got)
	}
	bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	read := make(chan error, 1)
	go func() { _, err := s.Device().Read(bufs, sizes, 0); read <- err }()
	select {
	case err := <-read:
		if err != nil || sizes[0] != len(ping) || bufs[0][20] != 0 {
			t.Errorf("no echo reply to the ping in the batch: %v, % x", err, bufs[0][:sizes[0]])
		}
	case <-time.After(5 * time.Second):
		t.Error("no echo reply to the ping in the batch within 5 s")
	}
}
