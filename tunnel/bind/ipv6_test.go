package bind

import (
	"net"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"golang.zx2c4.com/wireguard/conn"
)

// TestStdIPv6Conn checks that the Bind finds StdNetBind's IPv6 socket, and
// that IPv6 packets sent after IPv4 ones reach their real address (the
// upstream bug stdIPv6Conn works around mangles it).
func TestStdIPv6Conn(t *testing.T) {
	peer, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	defer peer.Close()
	peer4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer4.Close()
	b := New(key.Key{}, link.Discard)
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.ipv6.Load() == nil {
		t.Fatal("StdNetBind's IPv6 socket not found: has wireguard-go's StdNetBind changed?")
	}
	for i := range 3 {
		dst4 := peer4.LocalAddr().(*net.UDPAddr).AddrPort()
		if err := b.Send([][]byte{[]byte("v4")}, &conn.StdNetEndpoint{AddrPort: dst4}); err != nil {
			t.Fatal(err)
		}
		if err := b.Shared().Send([][]byte{[]byte("v6")}, key.Key{}, peer.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
			t.Fatal(err)
		}
		peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 16)
		n, src, err := peer.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "v6" {
			t.Fatalf("round %d: IPv6 packet after an IPv4 one: %q, %v", i, buf[:n], err)
		}
		if src.Port() != b.Port() {
			t.Fatalf("IPv6 packet left from port %d, not the shared socket's %d", src.Port(), b.Port())
		}
	}
}
