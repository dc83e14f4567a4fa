// Package userspace is punchtun without root: the interface's addresses
// live in an in-process TCP/IP stack (gVisor's) that is the tunnel's
// tun.Device, and the host reaches into it through the proxies and
// forwards here:
//
//   - stack.go                 the stack: its addresses, routes, sockets
//   - link.go, device.go       its network card as gVisor sees it, and as
//     WireGuard does (a tun.Device): packets in batches, TCP's segments
//     cut from 64 KiB superpackets (gso.go) on the way out and joined
//     (GRO, gro.go) on the way in, where an ICMP error from another peer
//     than the one the connection it names goes to (icmp.go, by the
//     peers' routes, routes.go), or one that would shrink the stack's
//     path MTU under IP's floor (pmtu.go), is dropped
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
	"slices"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Stack is the in-process TCP/IP stack holding the interface's addresses.
type Stack struct {
	stack *stack.Stack
	dev   *device
	addrs []netip.Addr
}

// nicID is the stack's one network card: the tunnel.
const nicID tcpip.NICID = 1

// NewStack creates the stack with the interface's addresses. Pings to
// them are answered by the stack itself.
func NewStack(addrs []netip.Addr, mtu int) (*Stack, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("userspace mode needs an Address (or a network certificate's)")
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	ep := newLinkEndpoint(mtu)
	if err := configure(s, ep, addrs); err != nil {
		s.Close()
		s.Wait()
		return nil, fmt.Errorf("userspace network stack: %w", err)
	}
	return &Stack{stack: s, dev: newDevice(s, ep, mtu), addrs: addrs}, nil
}

// configure gives s its network card, ep, with addrs and a default
// route for each of their families.
func configure(s *stack.Stack, ep *linkEndpoint, addrs []netip.Addr) error {
	sack := tcpip.TCPSACKEnabled(true) // off by default
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fmt.Errorf("TCP SACK: %v", err)
	}
	if err := s.CreateNIC(nicID, ep); err != nil {
		return fmt.Errorf("network card: %v", err)
	}
	var routes []tcpip.Route
	for _, a := range addrs {
		proto, everywhere := ipv4.ProtocolNumber, header.IPv4EmptySubnet
		if a.Is6() {
			proto, everywhere = ipv6.ProtocolNumber, header.IPv6EmptySubnet
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("address %v: %v", a, err)
		}
		if !slices.ContainsFunc(routes, func(r tcpip.Route) bool { return r.Destination == everywhere }) {
			routes = append(routes, tcpip.Route{Destination: everywhere, NIC: nicID})
		}
	}
	s.SetRouteTable(routes)
	return nil
}

// Device is the stack as the tunnel's tun.Device: what it sends goes
// into the tunnel, what the tunnel delivers is handed to it. Closing the
// device closes the stack.
func (s *Stack) Device() tun.Device { return s.dev }

// Dropped counts the packets neither the stack nor the tunnel could
// take (malformed, too large for the MTU, lowering the path MTU under
// IP's floor, or an ICMP error from the wrong peer).
func (s *Stack) Dropped() uint64 { return s.dev.Dropped.Load() }

// ICMPRefused counts the ICMP errors dropped for naming a connection to
// another peer than the one that sent them (icmp.go); Dropped counts
// them too.
func (s *Stack) ICMPRefused() uint64 { return s.dev.ICMPRefused.Load() }

// Addrs are the interface's addresses.
func (s *Stack) Addrs() []netip.Addr { return s.addrs }

// fullAddr is ap as gVisor takes it, and its network protocol.
func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	fa := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
	if ap.Addr().Is4() {
		return fa, ipv4.ProtocolNumber
	}
	return fa, ipv6.ProtocolNumber
}

// DialTCP connects to addr through the tunnel.
func (s *Stack) DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(addr)
	return gonet.DialContextTCP(ctx, s.stack, fa, proto)
}

// DialUDP opens a UDP socket in the stack sending to addr.
func (s *Stack) DialUDP(addr netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(addr)
	return gonet.DialUDP(s.stack, nil, &fa, proto)
}

// ListenUDP opens an unconnected UDP socket in the stack, on laddr (the
// zero AddrPort: any address of the interface's first family, a free
// port).
func (s *Stack) ListenUDP(laddr netip.AddrPort) (net.PacketConn, error) {
	if !laddr.IsValid() {
		_, proto := fullAddr(netip.AddrPortFrom(s.addrs[0], 0))
		return gonet.DialUDP(s.stack, nil, nil, proto)
	}
	fa, proto := fullAddr(laddr)
	return gonet.DialUDP(s.stack, &fa, nil, proto)
}

// ListenTCP listens on laddr, an address of the interface.
func (s *Stack) ListenTCP(laddr netip.AddrPort) (net.Listener, error) {
	fa, proto := fullAddr(laddr)
	return gonet.ListenTCP(s.stack, fa, proto)
}

// ListenPacket and Listen serve the names server in the stack
// (names.Network).
func (s *Stack) ListenPacket(addr netip.AddrPort) (net.PacketConn, error) { return s.ListenUDP(addr) }
func (s *Stack) Listen(addr netip.AddrPort) (net.Listener, error)         { return s.ListenTCP(addr) }
