package rendezvous

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
)

// tcpIdle closes a TCP peer that sent nothing for longer than this: it
// refreshes its registration every RefreshInterval.
const tcpIdle = 2*RefreshInterval + 5*time.Second

// streamLink is a TCP peer's way back: everything goes down its stream.
// A write only queues (wire.Stream), so the UDP reader and holders of the
// server's lock never wait for a peer that stopped reading; what does not
// fit the queue is dropped and counted.
type streamLink struct {
	st    *wire.Stream
	stats *Stats
}

func (l *streamLink) WriteToUDPAddrPort(b []byte, _ netip.AddrPort) (int, error) {
	err := l.st.Write(b)
	if errors.Is(err, wire.ErrQueueFull) {
		l.stats.DropTCPQueueFull.Add(1)
	}
	return len(b), err
}

// ServeTCP accepts peers whose networks block UDP, until ln is closed.
// They speak the same datagrams as over UDP, framed by wire.Stream, and
// are relayed like any other peer; the relay is then their only path.
func (s *Server) ServeTCP(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go s.serveStream(wire.NewStream(c))
	}
}

func (s *Server) serveStream(st *wire.Stream) {
	l := &streamLink{st: st, stats: &s.Stats}
	defer func() {
		st.Close()
		s.dropLink(l)
	}()
	buf := make([]byte, wire.MaxStreamDatagram)
	for {
		st.SetReadDeadline(time.Now().Add(tcpIdle))
		n, err := st.Read(buf)
		if err != nil {
			return
		}
		s.handle(l, netip.AddrPort{}, buf[:n], st.RemoteAddr())
	}
}

// dropLink forgets the peers registered over a TCP stream that closed:
// nothing can reach them through it any more.
func (s *Server) dropLink(l link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, reg := range s.peers {
		if reg.link == l {
			s.remove(k, reg)
			s.log.Info("peer's TCP connection closed", "peer", k, "endpoint", reg.endpoint)
		}
	}
}
