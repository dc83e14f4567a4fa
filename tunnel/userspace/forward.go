package userspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/tunnel/config"
)

// Forwards: a peer's connection to this interface's virtual address on a
// forwarded port is joined to a service on the host (Forward =
// tcp:22=127.0.0.1:22). The packets came through the tunnel's policy
// filter like any other: a flow the policy does not allow never reaches
// the stack.

// udpIdle is how long a forwarded UDP flow lives without traffic.
const udpIdle = 2 * time.Minute

// maxUDPFlows bounds a forwarded UDP port's flows: past it, datagrams
// from new sources are dropped (and logged) until flows go idle.
const maxUDPFlows = 1024

// targetDialTimeout bounds connecting to the local service.
const targetDialTimeout = 10 * time.Second

// Forwarder runs the forwards on every address of a stack.
type Forwarder struct {
	log *slog.Logger
	g   group
}

// StartForwards listens for fs on every address of s.
func StartForwards(log *slog.Logger, s *Stack, fs []config.Forward) (*Forwarder, error) {
	f := &Forwarder{log: log}
	for _, fw := range fs {
		for _, a := range s.Addrs() {
			ap := netip.AddrPortFrom(a, fw.Port)
			var err error
			if fw.Proto == "tcp" {
				err = f.tcp(s, ap, fw)
			} else {
				err = f.udp(s, ap, fw)
			}
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("Forward %s: %w", fw, err)
			}
		}
		log.Info("forwarding", "forward", fw.String(), "addresses", s.Addrs())
	}
	return f, nil
}

// Close stops every forward and ends its connections.
func (f *Forwarder) Close() { f.g.close() }

func (f *Forwarder) tcp(s *Stack, ap netip.AddrPort, fw config.Forward) error {
	ln, err := s.ListenTCP(ap)
	if err != nil {
		return err
	}
	f.g.acceptLoop(f.log, "forward "+fw.String(), ln, func(c net.Conn) {
		ctx, cancel := context.WithTimeout(f.g.context(), targetDialTimeout)
		local, err := new(net.Dialer).DialContext(ctx, "tcp", fw.Target)
		cancel()
		if err != nil {
			f.log.Warn("forward: the local service does not answer", "forward", fw.String(), "from", c.RemoteAddr(), "err", err)
			return
		}
		Splice(c, local)
	})
	return nil
}

func (f *Forwarder) udp(s *Stack, ap netip.AddrPort, fw config.Forward) error {
	pc, err := s.ListenUDP(ap)
	if err != nil {
		return err
	}
	u := &udpForward{log: f.log, pc: pc, fw: fw, flows: map[string]*udpFlow{}}
	f.g.goWith(pc, u.serve)
	return nil
}

// udpForward relays one forwarded UDP port: each peer's source address
// and port is a flow with a socket of its own towards the target, so
// that the service's answers go back to it.
type udpForward struct {
	log   *slog.Logger
	pc    net.PacketConn
	fw    config.Forward
	mu    sync.Mutex
	flows map[string]*udpFlow // by the peer's address:port
	wg    sync.WaitGroup
}

type udpFlow struct {
	conn net.Conn     // to the target
	last atomic.Int64 // unix nanoseconds of the last datagram either way
}

func (u *udpForward) serve() {
	defer func() {
		u.mu.Lock()
		for _, fl := range u.flows {
			fl.conn.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	}()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := u.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		fl, err := u.flow(from)
		if err != nil {
			u.log.Warn("forward: cannot reach the local service", "forward", u.fw.String(), "err", err)
			continue
		}
		fl.last.Store(time.Now().UnixNano())
		fl.conn.Write(buf[:n])
	}
}

// flow is from's flow, opened on its first datagram.
func (u *udpForward) flow(from net.Addr) (*udpFlow, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if fl, ok := u.flows[from.String()]; ok {
		return fl, nil
	}
	if len(u.flows) >= maxUDPFlows {
		return nil, fmt.Errorf("%d flows already: datagram from %s dropped", maxUDPFlows, from)
	}
	c, err := net.Dial("udp", u.fw.Target)
	if err != nil {
		return nil, err
	}
	fl := &udpFlow{conn: c}
	u.flows[from.String()] = fl
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		u.answers(fl, from)
	}()
	return fl, nil
}

// answers relays the service's datagrams back to the peer until the
// flow has been idle for udpIdle.
func (u *udpForward) answers(fl *udpFlow, to net.Addr) {
	defer func() {
		u.mu.Lock()
		delete(u.flows, to.String())
		u.mu.Unlock()
		fl.conn.Close()
	}()
	buf := make([]byte, maxDatagram)
	for {
		fl.conn.SetReadDeadline(time.Unix(0, fl.last.Load()).Add(udpIdle))
		n, err := fl.conn.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, fl.last.Load())) < udpIdle {
			continue
		}
		if err != nil {
			return
		}
		fl.last.Store(time.Now().UnixNano())
		u.pc.WriteTo(buf[:n], to)
	}
}
