package userspace

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// icmpPacket is the ICMP (or ICMPv6) message icmp from src to dst, its
// checksums made.
func icmpPacket(src, dst netip.Addr, icmp []byte) []byte {
	icmp = bytes.Clone(icmp)
	binary.BigEndian.PutUint16(icmp[2:], 0)
	if src.Is4() {
		binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp))
		ip := []byte{0x45, 0, 0, 0, 0, 1, 0, 0, 64, 1, 0, 0}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
		ip = append(append(ip, src.AsSlice()...), dst.AsSlice()...)
		binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip))
		return append(ip, icmp...)
	}
	ip := make([]byte, 40)
	ip[0], ip[6], ip[7] = 0x60, 58, 255
	binary.BigEndian.PutUint16(ip[4:], uint16(len(icmp)))
	copy(ip[8:], src.AsSlice())
	copy(ip[24:], dst.AsSlice())
	pseudo := append(append(append([]byte{}, ip[8:40]...), 0, 0, 0, 0, 0, 0, 0, 58), icmp...)
	binary.BigEndian.PutUint32(pseudo[32:], uint32(len(icmp)))
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(pseudo))
	return append(ip, icmp...)
}

// packetTooBig is what a router on the way from src to dst (a TCP
// connection's, from port sport to dport) sends src when a packet is too
// big for its next hop, of MTU mtu: ICMPv4 "fragmentation needed" or
// ICMPv6 "packet too big", from the address from.
func packetTooBig(from, src, dst netip.Addr, sport, dport uint16, mtu uint32) []byte {
	// The invoking packet: its IP header and the first 8 bytes of TCP.
	invoking := superPacket(src, dst, 12345, tcpACK, make([]byte, 1000))
	ipLen := len(invoking) - 32 - 1000
	binary.BigEndian.PutUint16(invoking[ipLen:], sport)
	binary.BigEndian.PutUint16(invoking[ipLen+2:], dport)
	invoking = invoking[:ipLen+8]
	if src.Is4() {
		binary.BigEndian.PutUint16(invoking[10:], inetChecksum(invoking[:20]))
		icmp := append([]byte{3, 4, 0, 0, 0, 0, 0, 0}, invoking...)
		binary.BigEndian.PutUint16(icmp[6:], uint16(mtu))
		return icmpPacket(from, src, icmp)
	}
	icmp := append([]byte{2, 0, 0, 0, 0, 0, 0, 0}, invoking...)
	binary.BigEndian.PutUint32(icmp[4:], mtu)
	return icmpPacket(from, src, icmp)
}

// fragments4 cuts the IPv4 packet pkt in two, the first fragment
// carrying at bytes of its payload.
func fragments4(pkt []byte, at int) [][]byte {
	hdr, payload := pkt[:20], pkt[20:]
	first := append(append([]byte{}, hdr...), payload[:at]...)
	second := append(append([]byte{}, hdr...), payload[at:]...)
	binary.BigEndian.PutUint16(first[2:], uint16(len(first)))
	binary.BigEndian.PutUint16(first[6:], 0x2000) // more fragments
	binary.BigEndian.PutUint16(second[2:], uint16(len(second)))
	binary.BigEndian.PutUint16(second[6:], uint16(at/8))
	for _, f := range [][]byte{first, second} {
		binary.BigEndian.PutUint16(f[10:], 0)
		binary.BigEndian.PutUint16(f[10:], inetChecksum(f[:20]))
	}
	return [][]byte{first, second}
}

// fragments6 cuts the IPv6 packet pkt in two, the first fragment
// carrying at bytes of what follows its fixed header.
func fragments6(pkt []byte, at int) [][]byte {
	hdr, payload := pkt[:40], pkt[40:]
	var frags [][]byte
	for i, part := range [][]byte{payload[:at], payload[at:]} {
		frag := []byte{hdr[6], 0, 0, 0, 0, 0, 0x12, 0x34}
		offset := uint16(0x0001) // more fragments
		if i == 1 {
			offset = uint16(at)
		}
		binary.BigEndian.PutUint16(frag[2:], offset)
		f := append(append(append([]byte{}, hdr...), frag...), part...)
		f[6] = 44
		binary.BigEndian.PutUint16(f[4:], uint16(len(f)-40))
		frags = append(frags, f)
	}
	return frags
}

// behindDestinationOptions puts an empty destination options header
// between the IPv6 packet pkt's fixed header and its payload.
func behindDestinationOptions(pkt []byte) []byte {
	opts := []byte{pkt[6], 0, 1, 4, 0, 0, 0, 0} // PadN
	p := append(append(append([]byte{}, pkt[:40]...), opts...), pkt[40:]...)
	p[6] = 60
	binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
	return p
}

// TestForgedPacketTooBig: the peer a stack's TCP connection goes to
// sends it a "packet too big" with an MTU under IP's floor, in whatever
// form the stack would take it (whole, in fragments, behind extension
// headers): the stack's segments do not shrink, where gVisor would have
// cut them to a byte each. One with an MTU above the floor does shrink
// them, from the peer or a router behind it; from another peer, it does
// not (icmp.go).
func TestForgedPacketTooBig(t *testing.T) {
	whole := func(p []byte) [][]byte { return [][]byte{p} }
	for _, tc := range []struct {
		name       string
		a, b, from string
		mtu        uint32
		forms      func([]byte) [][]byte
		honored    bool
	}{
		{"IPv4 MTU 0", "100.64.0.1", "100.64.0.2", "100.64.0.2", 0, whole, false},
		{"IPv4 MTU 68", "100.64.0.1", "100.64.0.2", "100.64.0.2", 68, whole, false},
		{"IPv4 MTU 500 in fragments", "100.64.0.1", "100.64.0.2", "100.64.0.2", 500, func(p []byte) [][]byte { return fragments4(p, 32) }, false},
		{"IPv4 MTU 600", "100.64.0.1", "100.64.0.2", "100.64.0.2", 600, whole, true},
		{"IPv4 MTU 600 from another peer", "100.64.0.1", "100.64.0.2", "100.64.0.3", 600, whole, false},
		{"IPv4 MTU 600 from a router behind the peer", "100.64.0.1", "100.64.0.2", "192.168.5.1", 600, whole, true},
		{"IPv6 MTU 1000", "fd00::1", "fd00::2", "fd00::2", 1000, whole, false},
		{"IPv6 MTU 0 behind destination options", "fd00::1", "fd00::2", "fd00::2", 0, func(p []byte) [][]byte { return whole(behindDestinationOptions(p)) }, false},
		{"IPv6 MTU 1000 in fragments", "fd00::1", "fd00::2", "fd00::2", 1000, func(p []byte) [][]byte { return fragments6(p, 56) }, false},
		{"IPv6 MTU 1000, its header in the second fragment", "fd00::1", "fd00::2", "fd00::2", 1000, func(p []byte) [][]byte { return fragments6(behindDestinationOptions(p), 8) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, aToB, _ := backToBack(t, tc.a, tc.b)
			a.SetPeerRoutes([][]netip.Prefix{peerB, peerC})
			addrA := netip.MustParseAddr(tc.a)
			ln, err := a.ListenTCP(netip.AddrPortFrom(addrA, 5201))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := b.DialTCP(ctx, netip.AddrPortFrom(addrA, 5201))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			bPort := uint16(c.LocalAddr().(*net.TCPAddr).Port)
			ptb := packetTooBig(netip.MustParseAddr(tc.from), addrA, netip.MustParseAddr(tc.b), 5201, bPort, tc.mtu)
			a.Device().Write(tc.forms(ptb), 0)

			// Segments of at most 600 bytes carry 64 KiB in more than
			// 109 packets; of the link's MTU, in about 55.
			const size = 64 << 10
			before := aToB.packets.Load()
			go s.Write(bytes.Repeat([]byte{'x'}, size))
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, size)); err != nil {
				t.Fatalf("read: %v", err)
			}
			sent := aToB.packets.Load() - before
			t.Logf("%d KiB in %d packets", size>>10, sent)
			if shrank := sent > size/600; shrank != tc.honored {
				t.Errorf("%d KiB sent in %d packets: segments shrunk %v, want %v", size>>10, sent, shrank, tc.honored)
			}
		})
	}
}

// TestPathMTUFilterPasses: what the filter lets by — echo requests in
// fragments, behind extension headers, and their later fragments.
func TestPathMTUFilterPasses(t *testing.T) {
	ping4 := echoRequest(netip.MustParseAddr("100.64.0.3"), netip.MustParseAddr("100.64.0.1"), 100)
	ping6 := echoRequest(netip.MustParseAddr("fd00::3"), netip.MustParseAddr("fd00::1"), 100)
	var packets [][]byte
	packets = append(packets, ping4, ping6, behindDestinationOptions(ping6))
	packets = append(packets, fragments4(ping4, 16)...)
	packets = append(packets, fragments6(ping6, 16)...)
	packets = append(packets, fragments6(behindDestinationOptions(ping6), 24)...)
	tooBig := fragments6(behindDestinationOptions(packetTooBig(netip.MustParseAddr("fd00::3"), netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), 1, 2, 0)), 24)
	packets = append(packets, tooBig[1]) // a later fragment: its first is the one dropped
	dropped := func(p []byte) bool {
		if p[0]>>4 == 4 {
			msg, ok := icmp4(p)
			return !ok || msg != nil && lowersPathMTU4(msg)
		}
		msg, ok := icmp6(p)
		return !ok || msg != nil && lowersPathMTU6(msg)
	}
	for i, p := range packets {
		if dropped(p) {
			t.Errorf("packet %d dropped: % x", i, p[:min(len(p), 64)])
		}
	}
	if !dropped(tooBig[0]) {
		t.Errorf("the first fragment of a packet too big under 1280 let by")
	}
}
