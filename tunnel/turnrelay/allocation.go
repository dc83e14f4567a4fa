// Package turnrelay holds a peer's allocation on a TURN server (coturn,
// say): a public UDP address the server relays to and from for us, reached
// over UDP, TCP or TLS. The peer's WireGuard packets to a peer whose own
// allocation it knows go through it when no direct path exists. The TURN
// protocol itself is github.com/pion/turn/v4's; this package dials,
// allocates and reports errors in words an operator can act on.
package turnrelay

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
)

// Config is what an allocation needs.
type Config struct {
	URI                string // RFC 7065: turn:host:port[?transport=tcp] or turns:host:port
	Username, Password string // TURN REST credentials, from the rendezvous
	// Control, when set, is applied to the socket before it is used
	// (the tunnel's fwmark).
	Control func(network, address string, c syscall.RawConn) error
	Log     *slog.Logger
}

// Allocation is a relayed address on a TURN server.
type Allocation struct {
	uri    string
	addr   netip.AddrPort // the relayed address: where peers send to reach us
	server netip.AddrPort
	client *turn.Client
	relay  net.PacketConn // pion's: WriteTo and ReadFrom go through the server
	base   net.PacketConn // the socket to the server: UDP, or STUN framed over TCP/TLS
	// channels maps peers to the channels pion bound them to, as its
	// first ChannelData to each showed (tap), for Channel.
	channels   atomic.Pointer[map[netip.AddrPort]uint16]
	channelsMu sync.Mutex // writers of channels
	// queue feeds sender, which writes through pion (Send): its WriteTo
	// waits for the server when a permission or channel is due.
	queue  chan queued
	done   chan struct{}
	sender sync.WaitGroup
}

// queued is a packet for Send's goroutine.
type queued struct {
	pkt []byte
	dst *net.UDPAddr
}

// sendQueue bounds the packets waiting for pion; more are dropped, as a
// full socket buffer would.
const sendQueue = 256

// allocateTimeout bounds dialing and allocating: pion retransmits a lost
// request for several seconds.
const allocateTimeout = 10 * time.Second

// Allocate dials the server cfg.URI names and allocates a relayed UDP
// address on it.
func Allocate(ctx context.Context, cfg Config) (*Allocation, error) {
	u, err := stun.ParseURI(cfg.URI)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.URI, err)
	}
	if u.Scheme != stun.SchemeTypeTURN && u.Scheme != stun.SchemeTypeTURNS {
		return nil, fmt.Errorf("%s: not a TURN URI", cfg.URI)
	}
	ctx, cancel := context.WithTimeout(ctx, allocateTimeout)
	defer cancel()
	hostport := net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
	base, server, err := dial(ctx, u, hostport, cfg.Control)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.URI, err)
	}
	// pion's transactions do not take a context: closing the socket
	// ends them when ours is done.
	stop := context.AfterFunc(ctx, func() { base.Close() })
	a, err := allocate(cfg, &tap{PacketConn: base}, server, hostport)
	if !stop() || err != nil {
		base.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("%s: %w", cfg.URI, explain(err))
	}
	return a, nil
}

func dial(ctx context.Context, u *stun.URI, hostport string, control func(string, string, syscall.RawConn) error) (net.PacketConn, netip.AddrPort, error) {
	if u.Proto == stun.ProtoTypeUDP && u.Scheme == stun.SchemeTypeTURN {
		ua, err := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Host)
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		server := netip.AddrPortFrom(ua[0].Unmap(), uint16(u.Port))
		lc := net.ListenConfig{Control: control}
		pc, err := lc.ListenPacket(ctx, "udp", ":0")
		return pc, server, err
	}
	d := net.Dialer{Control: control}
	conn, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	server := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	if u.Scheme == stun.SchemeTypeTURNS {
		tc := tls.Client(conn, &tls.Config{ServerName: u.Host, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, netip.AddrPort{}, fmt.Errorf("TLS: %w", err)
		}
		conn = tc
	}
	return turn.NewSTUNConn(conn), server, nil
}

func allocate(cfg Config, base *tap, server netip.AddrPort, hostport string) (*Allocation, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Allocation{uri: cfg.URI, server: server, base: base.PacketConn}
	a.channels.Store(&map[netip.AddrPort]uint16{})
	base.bound = a.bound
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: hostport,
		TURNServerAddr: hostport,
		Username:       cfg.Username,
		Password:       cfg.Password,
		Conn:           base,
		Software:       "punchtun",
		LoggerFactory:  &logging.DefaultLoggerFactory{Writer: debugWriter{log.With("turn", cfg.URI)}, DefaultLogLevel: logging.LogLevelWarn},
	})
	if err != nil {
		return nil, err
	}
	a.client = client
	if err := client.Listen(); err != nil {
		client.Close()
		return nil, err
	}
	relay, err := client.Allocate()
	if err != nil {
		client.Close()
		return nil, err
	}
	addr, ok := addrPort(relay.LocalAddr())
	if !ok {
		relay.Close()
		client.Close()
		return nil, errors.New("the server gave no relayed UDP address")
	}
	a.addr, a.relay = addr, relay
	a.queue, a.done = make(chan queued, sendQueue), make(chan struct{})
	a.sender.Add(1)
	go a.send()
	return a, nil
}

// explain words the errors an operator can act on.
func explain(err error) error {
	var te *stun.TurnError // pion returns a pointer
	if errors.As(err, &te) {
		switch te.ErrorCodeAttr.Code {
		case stun.CodeUnauthorized, stun.CodeBadRequest: // coturn says 401 for a wrong password, pion's server 400
			return fmt.Errorf("the TURN server refused our credentials (%w): its static-auth-secret must be the rendezvous's --turn-secret-file, and both hosts' clocks right", err)
		case stun.CodeAllocQuotaReached, stun.CodeInsufficientCapacity:
			return fmt.Errorf("the TURN server is full (%w)", err)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(fmt.Sprint(err), "transaction closed") ||
		strings.Contains(fmt.Sprint(err), "all retransmissions failed") {
		return fmt.Errorf("no answer from the TURN server within %v (%w)", allocateTimeout, err)
	}
	return err
}

// URI is the server's, as the rendezvous named it.
func (a *Allocation) URI() string { return a.uri }

// Addr is the relayed address: peers send to it to reach us.
func (a *Allocation) Addr() netip.AddrPort { return a.addr }

// Server is the TURN server's address.
func (a *Allocation) Server() netip.AddrPort { return a.server }

// Permit lets peer's packets through to us, and binds a channel to it, so
// that its first packets are not dropped at the server while ours are on
// their way.
func (a *Allocation) Permit(peer netip.AddrPort) error {
	return a.client.CreatePermission(net.UDPAddrFromAddrPort(peer))
}

// Send queues p for dst, to go through pion's WriteTo on a goroutine of
// the allocation's: that may wait seconds for the server (a permission or
// channel to create, retransmitted while unanswered), and the caller —
// WireGuard's sender, or the tunnel's control plane — must not. It
// reports false if the queue was full and p dropped.
func (a *Allocation) Send(p []byte, dst netip.AddrPort) bool {
	select {
	case a.queue <- queued{pkt: append([]byte(nil), p...), dst: net.UDPAddrFromAddrPort(dst)}:
		return true
	default:
		return false
	}
}

func (a *Allocation) send() {
	defer a.sender.Done()
	for {
		select {
		case q := <-a.queue:
			a.relay.WriteTo(q.pkt, q.dst) // errors: the path check notices
		case <-a.done:
			return
		}
	}
}

// ReadFrom reads the next packet a peer sent through the server.
func (a *Allocation) ReadFrom(p []byte) (int, netip.AddrPort, error) {
	n, from, err := a.relay.ReadFrom(p)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	src, ok := addrPort(from)
	if !ok {
		return 0, netip.AddrPort{}, errors.New("turnrelay: packet from a non-UDP address")
	}
	return n, src, nil
}

// addrPort is a UDP address of pion's as the tunnel keeps addresses:
// IPv4 unmapped.
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ua, _ := a.(*net.UDPAddr)
	if ua == nil {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// Close releases the allocation (a refresh with lifetime 0, not waited
// for) and closes the socket; ReadFrom then fails.
func (a *Allocation) Close() {
	close(a.done)
	a.relay.Close()
	a.client.Close() // ends pion's transactions: a WriteTo waiting returns
	a.base.Close()
	a.sender.Wait()
}

// UDPConn is the socket to the server when it is UDP, for sending
// ChannelData in batches (Channel); nil over TCP or TLS.
func (a *Allocation) UDPConn() *net.UDPConn {
	c, _ := a.base.(*net.UDPConn)
	return c
}

// Channel returns the channel pion bound to peer, once the server has
// confirmed it: ChannelData on it (a 4-byte header: the channel, the
// length; no padding over UDP) reaches the peer from our relayed address,
// as what Send sends does. Until then Send sends, and pion binds.
func (a *Allocation) Channel(peer netip.AddrPort) (uint16, bool) {
	ch, ok := (*a.channels.Load())[peer]
	return ch, ok
}

// bound learns the peer of a channel from pion's first ChannelData on it.
func (a *Allocation) bound(ch uint16) {
	finder, ok := a.relay.(interface {
		FindAddrByChannelNumber(uint16) (net.Addr, bool)
	})
	if !ok {
		return
	}
	addr, found := finder.FindAddrByChannelNumber(ch)
	peer, ok := addrPort(addr)
	if !found || !ok {
		return
	}
	a.channelsMu.Lock()
	defer a.channelsMu.Unlock()
	next := maps.Clone(*a.channels.Load())
	next[peer] = ch
	a.channels.Store(&next)
}

// tap is the socket pion writes through: it notes the channels of the
// ChannelData it sends, which pion sends only on a bound channel.
type tap struct {
	net.PacketConn
	bound func(ch uint16)
	seen  sync.Map // uint16 → struct{}
}

func (t *tap) WriteTo(p []byte, addr net.Addr) (int, error) {
	if len(p) >= 4 && p[0]&0xc0 == 0x40 {
		ch := binary.BigEndian.Uint16(p)
		if _, ok := t.seen.Load(ch); !ok {
			t.seen.Store(ch, struct{}{})
			t.bound(ch)
		}
	}
	return t.PacketConn.WriteTo(p, addr)
}

// debugWriter passes pion's log lines (warnings and errors) on at debug
// level: the tunnel logs what matters (allocations, failures) itself.
type debugWriter struct{ log *slog.Logger }

var _ io.Writer = debugWriter{}

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}
