package control

import (
	"net"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/transport"
)

// Birthday punching, the hard side (the easy side is nat.Punch.Spray).
// Behind a NAT that maps per destination, the shared socket's mapping
// towards the peer is on a port nobody can predict, so it cannot be
// punched. Instead, nat.BirthdaySockets extra sockets each send a probe to
// the peer's public endpoint, leaving as many mappings open for the peer's
// random probes to hit. The socket a probe arrives on wins: it carries that
// peer's WireGuard packets from then on (a route by it, transport.Socket),
// and the others close. The data path reads the sockets
// (link.DataPath.Serve).

// birthdayLinger keeps the sockets open after the peer's spray ends, for
// probes still in flight.
const birthdayLinger = 2 * time.Second

// birthdayBackoff spaces birthday rounds for a peer that keeps failing
// them; it doubles up to maxBirthdayBackoff. A round costs the easy side
// nat.SprayProbes probes over 4 s: the first retry comes soon, since a
// round lost to a congested moment should not cost a minute of relay.
const (
	minBirthdayBackoff = 10 * time.Second
	maxBirthdayBackoff = 10 * time.Minute
)

// birthdayOpens is how many times each socket sends its opening probe, a
// second apart: a mapping whose one packet was lost on the way out (a
// burst of 256 through a busy router) would otherwise be a socket the
// spray can never hit.
const (
	birthdayOpens  = 3
	birthdayReopen = time.Second
)

// birthday is one hard-side round for one peer.
type birthday struct {
	dst      netip.AddrPort // the peer's public endpoint
	conns    []*transport.Socket
	until    time.Time
	won      *transport.Socket
	opened   int       // opening probes sent per socket
	nextOpen time.Time // when the next ones are due
	// lingerUntil: the winner's path was lost, and it is kept open until
	// then for a peer that was only frozen (lingerBirthday).
	lingerUntil time.Time
}

// birthdayRole decides p's part in a birthday round from both NATs:
// "hard" opens sockets, "easy" sprays, "" means no round (a plain punch
// does, or nothing can).
func (p *peer) birthdayRole() string {
	d := p.deps
	easy := func(m nat.Mapping) bool { return m == nat.MappingEasy }
	switch {
	case d.mapper.ourNAT() == nat.MappingHard && easy(p.nat):
		return "hard"
	case easy(d.mapper.ourNAT()) && p.nat == nat.MappingHard:
		return "easy"
	}
	return ""
}

// maybeBirthday starts p's side of a birthday round towards observed, the
// peer's public endpoint, unless one ran recently.
func (p *peer) maybeBirthday(observed netip.AddrPort, now time.Time) {
	d := p.deps
	role := p.birthdayRole()
	if role == "" || !observed.IsValid() || now.Before(p.birthday.next) {
		return
	}
	if bd := p.birthday.round; bd != nil && bd.won != nil && p.punch.Path().Addr.IsValid() {
		return // the last round's winner carries the path
	}
	p.birthday.next = now.Add(p.birthday.backoff)
	p.birthday.backoff = min(2*p.birthday.backoff, maxBirthdayBackoff)
	d.log.Info("birthday punching", "peer", p.label(), "side", role, "peer_endpoint", observed)
	if role == "easy" {
		p.punch.Spray(now, observed.Addr())
		return
	}
	// All of the last round goes, its winner too: a socket left behind
	// here was never closed, and its reader kept Stop waiting forever.
	// But a winner lingering for the same endpoint joins the new round:
	// its NAT mapping is the one the peer may still be probing.
	var kept *transport.Socket
	if last := p.birthday.round; last != nil && last.won != nil && p.lingering(last, now) && last.dst == observed {
		kept, last.conns = last.won, nil
	}
	p.closeBirthday(true)
	bd := &birthday{dst: observed, until: now.Add(nat.SprayProbes*time.Second/nat.SprayRate + birthdayLinger)}
	if kept != nil {
		bd.conns = append(bd.conns, kept) // its reader runs on
	}
	lc := net.ListenConfig{Control: markSocket(d.mark)}
	// Sized for the tunnel's packets, not 64 KiB: a round opens 256
	// sockets (the reader grows a buffer that proves too small).
	bufSize := max(d.ifaceMTU+birthdayBufSlack, 2048)
	for range nat.BirthdaySockets {
		pc, err := lc.ListenPacket(d.ctx, "udp4", ":0")
		if err != nil {
			d.log.Warn("birthday punching: cannot open a socket", "err", err, "opened", len(bd.conns))
			break
		}
		conn := transport.NewSocket(pc.(*net.UDPConn), bufSize)
		bd.conns = append(bd.conns, conn)
		d.host.spawn(func() { d.data.Serve(conn, p.key) })
	}
	p.birthday.round = bd
	p.openBirthday(now)
}

// openBirthday sends each socket's opening probe to the peer.
func (p *peer) openBirthday(now time.Time) {
	bd := p.birthday.round
	for _, conn := range bd.conns {
		p.sendVia(conn, bd.dst, probeMessage(p.punch.NewProbe(now, bd.dst)))
	}
	bd.opened++
	bd.nextOpen = now.Add(birthdayReopen)
}

// birthdayBufSlack is what a WireGuard datagram adds to the tunnel's
// packet (32 bytes), with room to spare.
const birthdayBufSlack = 128

// birthdayWon makes conn, which the peer's probe came in on, p's socket
// towards src, and closes the rest.
func (p *peer) birthdayWon(conn *transport.Socket, src netip.AddrPort, now time.Time) {
	bd := p.birthday.round
	if bd == nil || bd.won != nil || src != bd.dst {
		return
	}
	if p.punch.Path().Addr.IsValid() {
		// The shared socket got through first (the peer's NAT was kinder
		// than it looked, a forwarded port say): it keeps the path.
		p.closeBirthday(true)
		return
	}
	bd.won = conn
	for _, other := range bd.conns {
		if other != conn {
			other.Close()
		}
	}
	bd.conns = []*transport.Socket{conn}
	p.birthday.backoff = minBirthdayBackoff
	p.deps.log.Info("birthday punching: a socket got through", "peer", p.label(), "local", conn.LocalAddr())
}

// tickBirthday repeats the opening probes of a round nobody won yet, and
// ends it when its time is up.
func (p *peer) tickBirthday(now time.Time) {
	bd := p.birthday.round
	switch {
	case bd == nil:
	case bd.won != nil:
		if !bd.lingerUntil.IsZero() && !p.lingering(bd, now) && p.punch.Path().Addr != bd.dst {
			p.closeBirthday(true) // the lost path did not come back on it
		}
	case now.After(bd.until):
		p.deps.log.Info("birthday punching: no socket got through", "peer", p.label(), "retry_in", p.birthday.next.Sub(now).Round(time.Second))
		p.closeBirthday(false)
	case bd.opened < birthdayOpens && !now.Before(bd.nextOpen):
		p.openBirthday(now)
	}
}

// closeBirthday closes p's birthday sockets; the winner too when all is set.
func (p *peer) closeBirthday(all bool) {
	bd := p.birthday.round
	if bd == nil || (bd.won != nil && !all) {
		return
	}
	for _, conn := range bd.conns {
		conn.Close()
	}
	p.birthday.round = nil
}

// socketTo is the birthday socket that reaches dst for p, if any.
func (p *peer) socketTo(dst netip.AddrPort) *transport.Socket {
	if bd := p.birthday.round; bd != nil && bd.won != nil && bd.dst == dst {
		return bd.won
	}
	return nil
}

// sendVia seals m for p and sends it to dst by t.
func (p *peer) sendVia(t link.Transport, dst netip.AddrPort, m wire.Body) {
	b := wire.Seal(make([]byte, 0, wire.Overhead+64), m.Type(), p.deps.pub, &p.shared, m.Append(nil))
	if err := t.Send([][]byte{b}, p.key, dst); err != nil {
		p.deps.log.Debug("send failed", "to", dst, "type", m.Type(), "err", err)
	}
}

// directVia is the transport of p's direct path to dst: the birthday
// socket that reaches it, else the shared socket.
func (p *peer) directVia(dst netip.AddrPort) link.Transport {
	if s := p.socketTo(dst); s != nil {
		return s
	}
	return p.deps.data.Shared()
}
