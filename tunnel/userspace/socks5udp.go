package userspace

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"
)

// UDP ASSOCIATE: the client sends datagrams, each with a SOCKS5 header
// naming its destination, to a relay socket on the host; the relay sends
// their payload from a UDP socket in the stack, and wraps what comes back
// in a header naming its source. The association lasts as long as the
// client's TCP connection. Only the client's host may use the relay, and
// the first port it sends from is then the only one; fragments (FRAG != 0)
// are dropped, as RFC 1928 allows.

// maxDatagram is the largest UDP payload relayed.
const maxDatagram = 65535

// associate runs one UDP association for the client on c.
func (s *SOCKS5) associate(c net.Conn, r *bufio.Reader) {
	clientIP, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	localIP, _ := netip.ParseAddrPort(c.LocalAddr().String())
	relay, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(localIP.Addr(), 0)))
	if err != nil {
		writeReply(c, repGeneralFailure, netip.AddrPort{})
		return
	}
	a := &association{s: s, relay: relay, client: clientIP.Addr().Unmap(), tunnel: map[bool]net.PacketConn{}}
	defer a.close()
	bound, _ := netip.ParseAddrPort(relay.LocalAddr().String())
	if err := writeReply(c, repSucceeded, bound); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() { defer close(done); a.fromClient() }()
	io.Copy(io.Discard, r) // until the client closes the association
	relay.Close()
	<-done
}

// association is one UDP ASSOCIATE's state.
type association struct {
	s      *SOCKS5
	relay  *net.UDPConn
	client netip.Addr // the client's host
	// mu guards clientPort (0 until the first datagram) and tunnel, the
	// stack's sockets by family (true: IPv6), opened on first use.
	mu         sync.Mutex
	clientPort uint16
	tunnel     map[bool]net.PacketConn
	wg         sync.WaitGroup
}

func (a *association) close() {
	a.relay.Close()
	a.mu.Lock()
	for _, pc := range a.tunnel {
		pc.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// fromClient relays the client's datagrams into the tunnel until the relay
// socket closes.
func (a *association) fromClient() {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := a.relay.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if !a.fromTheClient(from) {
			continue
		}
		dst, payload, err := parseDatagram(buf[:n])
		if err != nil {
			a.s.log.Debug("SOCKS5: datagram dropped", "client", from, "err", err)
			continue
		}
		ctx, cancel := context.WithTimeout(a.s.g.context(), dialTimeout)
		aps, err := a.s.dial.Resolve(ctx, dst.host, dst.port)
		cancel()
		if err != nil {
			a.s.log.Debug("SOCKS5: datagram to unknown host dropped", "destination", dst, "err", err)
			continue
		}
		pc, err := a.socket(aps[0].Addr().Is6(), from)
		if err != nil {
			a.s.log.Debug("SOCKS5: no socket in the stack", "err", err)
			continue
		}
		pc.WriteTo(payload, net.UDPAddrFromAddrPort(aps[0]))
	}
}

// fromTheClient reports whether a datagram from from is the client's.
func (a *association) fromTheClient(from netip.AddrPort) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if from.Addr().Unmap() != a.client {
		return false
	}
	if a.clientPort == 0 {
		a.clientPort = from.Port()
	}
	return from.Port() == a.clientPort
}

// socket is the stack's socket of the family, opened on first use with
// a reader relaying what it receives back to the client at to.
func (a *association) socket(v6 bool, to netip.AddrPort) (net.PacketConn, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if pc, ok := a.tunnel[v6]; ok {
		return pc, nil
	}
	for _, own := range a.s.dial.Stack.Addrs() {
		if own.Is6() != v6 {
			continue
		}
		pc, err := a.s.dial.Stack.ListenUDP(netip.AddrPortFrom(own, 0))
		if err != nil {
			return nil, err
		}
		a.tunnel[v6] = pc
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.toClient(pc, to) }()
		return pc, nil
	}
	return nil, errors.New("the interface has no address of that family")
}

// toClient relays what pc receives to the client, with its source.
func (a *association) toClient(pc net.PacketConn, to netip.AddrPort) {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		src, _ := netip.ParseAddrPort(from.String())
		hdr := appendAddr([]byte{0, 0, 0}, src)
		a.relay.WriteToUDPAddrPort(append(hdr, buf[:n]...), to)
	}
}

// parseDatagram splits a client's datagram: RSV(2) FRAG ATYP DST.ADDR
// DST.PORT DATA.
func parseDatagram(b []byte) (socksAddr, []byte, error) {
	if len(b) < 4 {
		return socksAddr{}, nil, errors.New("short datagram")
	}
	if b[2] != 0 {
		return socksAddr{}, nil, errors.New("fragment")
	}
	r := bytes.NewReader(b[3:])
	dst, err := readAddr(r)
	if err != nil {
		return socksAddr{}, nil, err
	}
	return dst, b[len(b)-r.Len():], nil
}

// isRefused reports whether a dial was refused (the host's RST, or the
// stack's).
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "connection was refused")
}
