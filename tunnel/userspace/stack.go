// Package userspace is punchtun without root: the interface's addresses
// live in an in-process TCP/IP stack (gVisor's, through wireguard-go's
// tun/netstack) that is the tunnel's tun.Device, and the host reaches
// into it through the proxies and forwards here:
//
//   - socks5.go, socks5udp.go  a SOCKS5 proxy into the network (CONNECT,
//     UDP ASSOCIATE)
//   - httpproxy.go             an HTTP proxy (CONNECT and plain requests)
//   - forward.go               peers reaching a local service through the
//     interface's virtual address (Forward = tcp:22=127.0.0.1:22)
//
// Dialer (dial.go) is what all of them and `punchtun nc` dial through:
// names resolved as the interface's names server would, then the stack.
// Nothing here is platform-specific, and nothing here knows WireGuard:
// the root package tunnel puts the Stack's device under it.
package userspace

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// Stack is the in-process TCP/IP stack holding the interface's addresses.
type Stack struct {
	dev   tun.Device
	net   *netstack.Net
	addrs []netip.Addr
}

// NewStack creates the stack with the interface's addresses. Pings to
// them are answered by the stack itself.
func NewStack(addrs []netip.Addr, mtu int) (*Stack, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("userspace mode needs an Address (or a network certificate's)")
	}
	dev, n, err := netstack.CreateNetTUN(addrs, nil, mtu)
	if err != nil {
		return nil, fmt.Errorf("userspace network stack: %w", err)
	}
	return &Stack{dev: newBatchDevice(dev, mtu), net: n, addrs: addrs}, nil
}

// Device is the stack as the tunnel's tun.Device: what it sends goes
// into the tunnel, what the tunnel delivers is handed to it. Closing the
// device closes the stack.
func (s *Stack) Device() tun.Device { return s.dev }

// Addrs are the interface's addresses.
func (s *Stack) Addrs() []netip.Addr { return s.addrs }

// DialTCP connects to addr through the tunnel.
func (s *Stack) DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	return s.net.DialContextTCPAddrPort(ctx, addr)
}

// DialUDP opens a UDP socket in the stack sending to addr.
func (s *Stack) DialUDP(addr netip.AddrPort) (net.Conn, error) {
	return s.net.DialUDPAddrPort(netip.AddrPort{}, addr)
}

// ListenUDP opens an unconnected UDP socket in the stack, on laddr (the
// zero AddrPort: any address, a free port).
func (s *Stack) ListenUDP(laddr netip.AddrPort) (net.PacketConn, error) {
	if !laddr.IsValid() {
		return s.net.ListenUDP(nil)
	}
	return s.net.ListenUDPAddrPort(laddr)
}

// ListenTCP listens on laddr, an address of the interface.
func (s *Stack) ListenTCP(laddr netip.AddrPort) (net.Listener, error) {
	return s.net.ListenTCPAddrPort(laddr)
}

// ListenPacket and Listen serve the names server in the stack
// (names.Network).
func (s *Stack) ListenPacket(addr netip.AddrPort) (net.PacketConn, error) { return s.ListenUDP(addr) }
func (s *Stack) Listen(addr netip.AddrPort) (net.Listener, error)         { return s.ListenTCP(addr) }
