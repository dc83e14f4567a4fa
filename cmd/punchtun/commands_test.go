package main

import (
	"net"
	"net/netip"
	"testing"
)

func TestOtherAddress(t *testing.T) {
	listen := func(addrs ...string) []*net.UDPConn {
		var conns []*net.UDPConn
		for _, a := range addrs {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(a)))
			if err != nil {
				t.Skipf("cannot listen on %s: %v", a, err)
			}
			t.Cleanup(func() { c.Close() })
			conns = append(conns, c)
		}
		return conns
	}
	addr := func(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

	// Another IP wins over another port of the same IP.
	conns := listen("127.0.0.1:0", "127.0.0.1:0", "127.0.0.2:0")
	if got, want := otherAddress(conns, 0), addr(conns[2]); got != want {
		t.Errorf("other of %s = %s, want %s (another IP)", addr(conns[0]), got, want)
	}
	if got, want := otherAddress(conns, 2), addr(conns[0]); got != want {
		t.Errorf("other of %s = %s, want %s", addr(conns[2]), got, want)
	}
	// One IP, two ports: each advertises the other.
	conns = listen("127.0.0.1:0", "127.0.0.1:0")
	if got, want := otherAddress(conns, 0), addr(conns[1]); got != want {
		t.Errorf("one IP: other of %s = %s, want %s", addr(conns[0]), got, want)
	}
	if got, want := otherAddress(conns, 1), addr(conns[0]); got != want {
		t.Errorf("one IP: other of %s = %s, want %s", addr(conns[1]), got, want)
	}
	// Two unspecified addresses: the other port, its address filled in
	// per packet by the server.
	conns = listen("0.0.0.0:0", "0.0.0.0:0")
	if got := otherAddress(conns, 0); !got.Addr().IsUnspecified() || got.Port() != addr(conns[1]).Port() {
		t.Errorf("unspecified: other of %s = %s, want the unspecified address, port %d", addr(conns[0]), got, addr(conns[1]).Port())
	}
	// Nothing to advertise: one socket, another family, unspecified ones.
	for _, addrs := range [][]string{
		{"127.0.0.1:0"},
		{"127.0.0.1:0", "[::1]:0"},
		{"0.0.0.0:0", "127.0.0.1:0"},
		{"127.0.0.1:0", "0.0.0.0:0"},
	} {
		if got := otherAddress(listen(addrs...), 0); got.IsValid() {
			t.Errorf("%v: other %s, want none", addrs, got)
		}
	}
}
