package tunnel

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
)

// TCP fallback. Where a network blocks UDP, nothing punches and the UDP
// relay is out of reach too: the peer then talks to each rendezvous over
// TCP — registrations, intros and relayed WireGuard packets alike, framed
// by wire.Stream — first on the rendezvous's own port, then on 443, which
// firewalls that block UDP usually still let out. It keeps asking STUN over
// UDP at every refresh, and drops TCP as soon as UDP answers again.

const (
	tcpDialTimeout = 3 * time.Second
	// tcpFallbackPort is tried when the rendezvous's own port is closed to TCP.
	tcpFallbackPort = 443
)

// dialTCP connects to s over TCP on a helper goroutine, on its own port,
// then on 443, and posts the outcome to the control goroutine.
func (c *control) dialTCP(s *server, addr netip.AddrPort) {
	var st *wire.Stream
	for _, port := range []uint16{addr.Port(), tcpFallbackPort} {
		ctx, cancel := context.WithTimeout(c.ctx, tcpDialTimeout)
		conn, err := c.dial(ctx, "tcp", netip.AddrPortFrom(addr.Addr(), port).String())
		cancel()
		if err == nil {
			st = wire.NewStream(conn)
			break
		}
		c.log.Debug("rendezvous over TCP failed", "rendezvous", s.hostport, "port", port, "err", err)
	}
	if !c.post(func() { c.dialed(s, st) }) && st != nil {
		st.Close()
	}
}

// dialed takes the outcome of dialTCP: st, if connected, becomes s's
// stream unless UDP came back meanwhile.
func (c *control) dialed(s *server, st *wire.Stream) {
	now := time.Now()
	if !slices.Contains(c.servers, s) { // a reload removed it meanwhile
		if st != nil {
			st.Close()
		}
		return
	}
	if !s.reg.Dialed(now, st != nil, c.udpBlocked()) {
		if st != nil {
			st.Close()
		} else {
			c.log.Warn("cannot reach rendezvous over TCP either", "rendezvous", s.hostport, "retry_in", s.reg.NextDial().Sub(now).Round(time.Second))
		}
		return
	}
	c.log.Info("UDP blocked: reaching rendezvous over TCP", "rendezvous", s.hostport, "tcp", st.RemoteAddr())
	s.stream = st
	c.spawn(func() { c.readStream(s, st) })
}

// readStream passes what s sends over TCP on: relayed WireGuard to the Bind,
// the rest to the control goroutine, until the connection ends.
func (c *control) readStream(s *server, st *wire.Stream) {
	buf := make([]byte, wire.MaxStreamDatagram)
	for {
		n, err := st.Read(buf)
		if err != nil {
			break
		}
		if !c.bind.InjectRelayed(buf[:n]) {
			c.queue(buf[:n], s.addr, true)
		}
	}
	st.Close()
	c.post(func() { c.streamClosed(s, st) })
}

func (c *control) streamClosed(s *server, st *wire.Stream) {
	if s.stream != st {
		return
	}
	s.stream = nil
	c.log.Warn("TCP connection to rendezvous closed", "rendezvous", s.hostport)
	now := time.Now()
	if s.reg.StreamClosed(now) {
		c.serverChanged(s, now, "TCP connection to the rendezvous closed")
	}
}

// udpBack follows the first STUN answer after UDP was taken for blocked:
// the network lets UDP out again, so punching and the UDP relay are back,
// and the TCP connections go.
func (c *control) udpBack(now time.Time) {
	c.log.Info("UDP works again: leaving TCP")
	c.setMapping(nat.MappingUnknown, now)
	for _, s := range c.servers {
		if s.stream != nil {
			s.stream.Close() // readStream unregisters s
		}
	}
}
