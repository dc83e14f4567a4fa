package userspace

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The peers of the ICMP tests, as the stack at 100.64.0.1 (fd00::1) sees
// them: B routes its own address and a LAN behind it, C its address.
var (
	peerB = []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("fd00::2/128"),
		netip.MustParsePrefix("192.168.5.0/24"), netip.MustParsePrefix("fd05::/64")}
	peerC = []netip.Prefix{netip.MustParsePrefix("100.64.0.3/32"), netip.MustParsePrefix("fd00::3/128")}
)

// TestPeerRoutes: the longest prefix holding an address names its peer;
// a prefix two peers claim names neither, whatever shorter one holds it.
func TestPeerRoutes(t *testing.T) {
	r := newPeerRoutes([][]netip.Prefix{
		{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/16")},
		{netip.MustParsePrefix("10.1.2.3/24"), netip.MustParsePrefix("fd00:1::1/128")}, // not masked
		{netip.MustParsePrefix("10.9.0.0/16")},
		{netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("10.9.9.9/32")},
	})
	for addr, want := range map[string]int{
		"10.2.2.2": 0, "10.1.2.200": 1, "fd00::7": 0, "fd00:1::1": 1, "fd00:1::2": 0,
		"10.9.1.1": noPeer, "10.9.9.9": 3, "11.0.0.1": noPeer, "fe80::1": noPeer, "::ffff:10.2.2.2": noPeer,
	} {
		if got := r.lookup(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s routed to peer %d, want %d", addr, got, want)
		}
	}
	if newPeerRoutes(nil).sameRoute(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.1")) {
		t.Error("with no peers, an address is routed to the same peer as itself")
	}
}

// unreachable is the ICMP "port unreachable" (ICMPv6 "destination
// unreachable, port unreachable") from the address from about pkt, a
// packet the stack sent.
func unreachable(from netip.Addr, pkt []byte) []byte {
	icmp := append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, pkt[:ipHeaderLen(pkt)+8]...)
	to := netip.AddrFrom4([4]byte(pkt[12:16]))
	if pkt[0]>>4 == 6 {
		icmp[0], icmp[1] = 1, 4
		to = netip.AddrFrom16([16]byte(pkt[8:24]))
	}
	return icmpPacket(from, to, icmp)
}

// readSYN reads what s sends until a TCP SYN to dst, and returns it.
func readSYN(t *testing.T, s *Stack, dst netip.Addr) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	go func() {
		bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
		for {
			if _, err := s.Device().Read(bufs, sizes, 0); err != nil {
				got <- nil
				return
			}
			p := bufs[0][:sizes[0]]
			ipLen, to := 20, netip.Addr{}
			if p[0]>>4 == 6 && p[6] == 6 {
				ipLen, to = 40, netip.AddrFrom16([16]byte(p[24:40]))
			} else if p[0]>>4 == 4 && p[9] == 6 {
				to = netip.AddrFrom4([4]byte(p[16:20]))
			}
			if to == dst && header.TCPFlags(p[ipLen+13]) == header.TCPFlagSyn {
				got <- append([]byte(nil), p...)
				return
			}
		}
	}()
	select {
	case p := <-got:
		if p == nil {
			t.Fatal("the stack closed before sending a SYN")
		}
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no SYN within 5 s")
	}
	return nil
}

// TestForgedUnreachable: while the stack connects to peer B, a "port
// unreachable" naming the connection comes in. From another peer (C) it
// is dropped and counted, and the handshake completes; from B, or from a
// router on B's LAN, it aborts the connection, as a real one must. An
// error whose quoted header is cut off in its first fragment names no
// connection for certain, and is dropped whoever sends it.
func TestForgedUnreachable(t *testing.T) {
	whole := func(p []byte) [][]byte { return [][]byte{p} }
	for _, tc := range []struct {
		name    string
		a, b    string
		from    string
		forms   func([]byte) [][]byte
		honored bool
	}{
		{"IPv4 from another peer", "100.64.0.1", "100.64.0.2", "100.64.0.3", whole, false},
		{"IPv4 from another peer, in fragments", "100.64.0.1", "100.64.0.2", "100.64.0.3", func(p []byte) [][]byte { return fragments4(p, 32) }, false},
		{"IPv4 from the peer", "100.64.0.1", "100.64.0.2", "100.64.0.2", whole, true},
		{"IPv4 from the peer, in fragments", "100.64.0.1", "100.64.0.2", "100.64.0.2", func(p []byte) [][]byte { return fragments4(p, 32) }, true},
		{"IPv4 from the peer, the quote in the second fragment", "100.64.0.1", "100.64.0.2", "100.64.0.2", func(p []byte) [][]byte { return fragments4(p, 24) }, false},
		{"IPv4 from a router behind the peer", "100.64.0.1", "100.64.0.2", "192.168.5.1", whole, true},
		{"IPv6 from another peer", "fd00::1", "fd00::2", "fd00::3", whole, false},
		{"IPv6 from another peer, behind destination options", "fd00::1", "fd00::2", "fd00::3", func(p []byte) [][]byte { return whole(behindDestinationOptions(p)) }, false},
		{"IPv6 from the peer", "fd00::1", "fd00::2", "fd00::2", whole, true},
		{"IPv6 from a router behind the peer", "fd00::1", "fd00::2", "fd05::1", whole, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := netip.MustParseAddr(tc.a), netip.MustParseAddr(tc.b)
			s, err := NewStack([]netip.Addr{a}, 1280)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Device().Close()
			s.SetPeerRoutes([][]netip.Prefix{peerB, peerC})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dialed := make(chan error, 1)
			go func() {
				c, err := s.DialTCP(ctx, netip.AddrPortFrom(b, 5201))
				if err == nil {
					c.Close()
				}
				dialed <- err
			}()
			syn := readSYN(t, s, b)
			s.Device().Write(tc.forms(unreachable(netip.MustParseAddr(tc.from), syn)), 0)

			// B's answer: the handshake completes unless the error aborted it.
			tcp := syn[ipHeaderLen(syn):]
			port, seq := binary.BigEndian.Uint16(tcp[0:2]), binary.BigEndian.Uint32(tcp[4:8])
			s.Device().Write([][]byte{tcpSegment(b, a, 5201, port, 7000, seq+1, header.TCPFlagSyn|header.TCPFlagAck, nil, nil)}, 0)
			err = <-dialed
			if aborted := err != nil; aborted != tc.honored {
				t.Errorf("connection aborted: %v (%v), want %v", aborted, err, tc.honored)
			}
			if refused, want := s.ICMPRefused(), uint64(1); tc.honored {
				if refused != 0 {
					t.Errorf("%d ICMP errors refused, want 0", refused)
				}
			} else if refused != want {
				t.Errorf("%d ICMP errors refused, want %d", refused, want)
			}
		})
	}
}

// ipHeaderLen is the length of the IP header of pkt, a packet the stack
// sent (no IPv6 extension headers).
func ipHeaderLen(pkt []byte) int {
	if pkt[0]>>4 == 6 {
		return 40
	}
	return int(pkt[0]&0xf) * 4
}
