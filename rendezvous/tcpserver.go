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

// streamEgress is a TCP peer's way back: everything goes down its stream.
// A write only queues (wire.Stream), so the UDP reader and holders of the
// registry's lock never wait for a peer that stopped reading; what does
// not fit the queue is dropped and counted.
type streamEgress struct {
	st    *wire.Stream
	stats *Stats
}

func (e *streamEgress) WriteToUDPAddrPort(b []byte, _ netip.AddrPort) (int, error) {
	err := e.st.Write(b)
	if errors.Is(err, wire.ErrQueueFull) {
		e.stats.DropTCPQueueFull.Add(1)
	}
	return len(b), err
}

// tcpServer serves peers over TCP: one goroutine per stream hands its
// datagrams to handle, and closed is told when a stream ends.
type tcpServer struct {
	handle packetHandler
	closed func(egress)
	stats  *Stats
}

// serve is Server.ServeTCP.
func (ts *tcpServer) serve(ln net.Listener) error {
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
		go ts.serveStream(wire.NewStream(c))
	}
}

func (ts *tcpServer) serveStream(st *wire.Stream) {
	e := &streamEgress{st: st, stats: ts.stats}
	defer func() {
		st.Close()
		ts.closed(e)
	}()
	buf := make([]byte, wire.MaxStreamDatagram)
	for {
		st.SetReadDeadline(time.Now().Add(tcpIdle))
		n, err := st.Read(buf)
		if err != nil {
			return
		}
		ts.handle(e, netip.AddrPort{}, buf[:n], st.RemoteAddr())
	}
}
