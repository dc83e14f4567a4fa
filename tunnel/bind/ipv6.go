package bind

import (
	"net"
	"reflect"
	"unsafe"

	"golang.zx2c4.com/wireguard/conn"
)

// IPv6 sends bypass StdNetBind.Send. In the wireguard-go version go.mod
// pins, Send takes a *net.UDPAddr from a pool, copies the destination into
// its IP slice and trims the slice to 4 bytes for IPv4; the next IPv6 send
// that gets the same object copies only 4 of its 16 bytes, so after any
// IPv4 traffic IPv6 packets go to a mangled address (2001:db8:b::2 became
// 2001:db8::). The lab's IPv6 test (TestIPv6) shows it. Until that is fixed
// upstream, the Bind writes IPv6 packets itself, on StdNetBind's own IPv6
// socket (sendStdOnce), so the port — and the NAT and firewall
// state — stay the same.
// IPv6 paths lose UDP GSO; IPv4 keeps everything.

// stdIPv6Conn returns the IPv6 socket of an open StdNetBind, or nil when
// it has none or its layout is not the one expected (the test
// TestStdIPv6Conn fails loudly if an upgrade changes it).
func stdIPv6Conn(b conn.Bind) *net.UDPConn {
	v := reflect.ValueOf(b)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("ipv6")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*net.UDPConn]() {
		return nil
	}
	return *(**net.UDPConn)(unsafe.Pointer(f.UnsafeAddr()))
}
