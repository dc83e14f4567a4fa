package userspace

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// A SOCKS5 server (RFC 1928) into the tunnel: no authentication (it
// listens on loopback unless told otherwise), CONNECT and UDP ASSOCIATE;
// BIND is refused. Names in requests resolve through the Dialer, so a
// member's name starts its lookup.

const socksVersion = 5

// The commands, address types and replies of RFC 1928.
const (
	cmdConnect      = 1
	cmdBind         = 2
	cmdUDPAssociate = 3

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4

	repSucceeded          = 0
	repGeneralFailure     = 1
	repHostUnreachable    = 4
	repConnectionRefused  = 5
	repCommandUnsupported = 7
	repAddressUnsupported = 8
)

// negotiationTimeout bounds a client's greeting and request.
const negotiationTimeout = 30 * time.Second

// errAddressType is a request's unknown address type.
var errAddressType = errors.New("unknown address type")

// socksAddr is a request's destination: a name or an address, and a port.
type socksAddr struct {
	host string // a name, or an address's text
	port uint16
}

func (a socksAddr) String() string { return net.JoinHostPort(a.host, fmt.Sprint(a.port)) }

// SOCKS5 serves one listener.
type SOCKS5 struct {
	log  *slog.Logger
	dial *Dialer
	ln   net.Listener
	g    group
}

// ServeSOCKS5 serves SOCKS5 on ln until Close.
func ServeSOCKS5(log *slog.Logger, ln net.Listener, d *Dialer) *SOCKS5 {
	s := &SOCKS5{log: log, dial: d, ln: ln}
	s.g.acceptLoop(log, "SOCKS5", ln, s.handle)
	return s
}

// Addr is where it listens.
func (s *SOCKS5) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving and ends every connection and association.
func (s *SOCKS5) Close() { s.g.close() }

func (s *SOCKS5) handle(c net.Conn) {
	c.SetDeadline(time.Now().Add(negotiationTimeout))
	r := bufio.NewReader(c)
	if err := greet(r, c); err != nil {
		s.log.Debug("SOCKS5: bad greeting", "client", c.RemoteAddr(), "err", err)
		return
	}
	cmd, dst, err := readRequest(r)
	if err != nil {
		rep := byte(repGeneralFailure)
		if errors.Is(err, errAddressType) {
			rep = repAddressUnsupported
		}
		writeReply(c, rep, netip.AddrPort{})
		s.log.Debug("SOCKS5: bad request", "client", c.RemoteAddr(), "err", err)
		return
	}
	switch cmd {
	case cmdConnect:
		s.connect(c, r, dst)
	case cmdUDPAssociate:
		s.associate(c, r)
	default:
		writeReply(c, repCommandUnsupported, netip.AddrPort{})
	}
}

// greet reads the client's methods and picks "no authentication".
func greet(r *bufio.Reader, w io.Writer) error {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != socksVersion {
		return fmt.Errorf("version %d", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return err
	}
	for _, m := range methods {
		if m == 0 {
			_, err := w.Write([]byte{socksVersion, 0})
			return err
		}
	}
	w.Write([]byte{socksVersion, 0xff})
	return errors.New("client offers no method without authentication")
}

// readRequest reads VER CMD RSV ATYP DST.ADDR DST.PORT.
func readRequest(r *bufio.Reader) (cmd byte, dst socksAddr, err error) {
	var hdr [3]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, dst, err
	}
	if hdr[0] != socksVersion {
		return 0, dst, fmt.Errorf("version %d", hdr[0])
	}
	dst, err = readAddr(r)
	return hdr[1], dst, err
}

// readAddr reads ATYP DST.ADDR DST.PORT.
func readAddr(r io.Reader) (socksAddr, error) {
	var atyp [1]byte
	if _, err := io.ReadFull(r, atyp[:]); err != nil {
		return socksAddr{}, err
	}
	var host string
	switch atyp[0] {
	case atypIPv4, atypIPv6:
		b := make([]byte, map[byte]int{atypIPv4: 4, atypIPv6: 16}[atyp[0]])
		if _, err := io.ReadFull(r, b); err != nil {
			return socksAddr{}, err
		}
		a, _ := netip.AddrFromSlice(b)
		host = a.Unmap().String()
	case atypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return socksAddr{}, err
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return socksAddr{}, err
		}
		if n[0] == 0 {
			return socksAddr{}, errors.New("empty name")
		}
		host = string(b)
	default:
		return socksAddr{}, fmt.Errorf("%w %d", errAddressType, atyp[0])
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return socksAddr{}, err
	}
	return socksAddr{host: host, port: binary.BigEndian.Uint16(port[:])}, nil
}

// appendAddr appends ATYP ADDR PORT for a (the zero AddrPort: 0.0.0.0:0).
func appendAddr(b []byte, a netip.AddrPort) []byte {
	ip := a.Addr().Unmap()
	switch {
	case ip.Is6():
		b = append(b, atypIPv6)
	default:
		if !ip.IsValid() {
			ip = netip.IPv4Unspecified()
		}
		b = append(b, atypIPv4)
	}
	b = append(b, ip.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, a.Port())
}

func writeReply(w io.Writer, rep byte, bound netip.AddrPort) error {
	_, err := w.Write(appendAddr([]byte{socksVersion, rep, 0}, bound))
	return err
}

// connect dials dst through the tunnel and joins the client to it.
func (s *SOCKS5) connect(c net.Conn, r *bufio.Reader, dst socksAddr) {
	up, err := s.dial.Dial(s.g.context(), "tcp", dst.String())
	if err != nil {
		s.log.Debug("SOCKS5: connect failed", "client", c.RemoteAddr(), "destination", dst, "err", err)
		writeReply(c, replyFor(err), netip.AddrPort{})
		return
	}
	bound, _ := netip.ParseAddrPort(up.LocalAddr().String())
	if err := writeReply(c, repSucceeded, bound); err != nil {
		up.Close()
		return
	}
	c.SetDeadline(time.Time{})
	Splice(&bufferedConn{Conn: c, r: r}, up)
}

// replyFor is the SOCKS5 reply for a failed dial.
func replyFor(err error) byte {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return repHostUnreachable
	case errors.Is(err, context.DeadlineExceeded):
		return repHostUnreachable
	case isRefused(err):
		return repConnectionRefused
	}
	return repGeneralFailure
}

// bufferedConn reads what a bufio.Reader holds of a connection first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWrite passes on the half close of the connection beneath.
func (b *bufferedConn) CloseWrite() error {
	if cw, ok := b.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return b.Conn.Close()
}
