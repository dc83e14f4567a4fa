package portmap

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Client asks one gateway for mappings. Each call is bounded by its
// context; the caller runs it off any goroutine that must not wait.
type Client struct {
	Gateway netip.Addr
	// Dial opens the UDP and TCP connections (nil: a net.Dialer's), and
	// ListenPacket the socket SSDP answers come to: the tunnel marks
	// its sockets so that they never go through the tunnel.
	Dial         func(ctx context.Context, network, addr string) (net.Conn, error)
	ListenPacket func(ctx context.Context, network, addr string) (net.PacketConn, error)

	// Where the gateway's servers are: tests point them elsewhere.
	serverPort int    // NAT-PMP and PCP (0: ServerPort)
	ssdpAddr   string // SSDP's group (empty: ssdpGroup)
}

// firstWait is the first retransmission timeout, doubling after each
// (RFC 6886 §3.1; PCP's is 3 s, but a LAN answers in milliseconds).
const firstWait = 250 * time.Millisecond

// lateAnswers is how long the other protocols may still answer once one
// has won (MapAny).
const lateAnswers = 250 * time.Millisecond

// MapAny asks every protocol in protos at once for a mapping of our UDP
// port internal, for lifetime; the first good answer wins and the others
// are cancelled lateAnswers later. prev, if valid, is the mapping to
// renew: its protocol alone is asked, for the same external port. It
// returns the mapping, or each protocol's error.
func (c *Client) MapAny(ctx context.Context, protos []Protocol, internal uint16, prev *Mapping, lifetime time.Duration) (*Mapping, map[Protocol]error) {
	if prev != nil {
		protos = []Protocol{prev.Protocol}
	}
	errs := map[Protocol]error{}
	if len(protos) == 0 {
		return nil, errs
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type outcome struct {
		p   Protocol
		m   Mapping
		err error
	}
	out := make(chan outcome, len(protos))
	var wg sync.WaitGroup
	for _, p := range protos {
		wg.Go(func() {
			m, err := c.Map(ctx, p, internal, prev, lifetime)
			out <- outcome{p, m, err}
		})
	}
	go func() { wg.Wait(); close(out) }()
	// An answer that names the router's address wins at once; one that
	// does not (UPnP's, from some routers) only if no other comes: only a
	// named address tells a router behind a second NAT.
	var won, unnamed *Mapping
	var losers []Mapping
	for o := range out {
		switch {
		case o.err != nil:
			errs[o.p] = o.err
		case won != nil:
			losers = append(losers, o.m)
		case !o.m.External.Addr().IsValid() && unnamed == nil:
			unnamed = &o.m
		default:
			won = &o.m
			// The others get a moment to answer: a forward the router made
			// for one of them must be known, to be deleted on down.
			time.AfterFunc(lateAnswers, cancel)
			if unnamed != nil {
				losers = append(losers, *unnamed)
			}
		}
	}
	won = cmp.Or(won, unnamed)
	if won == nil {
		return nil, errs
	}
	if prev != nil {
		won.also = prev.also // a renewal asks the winner's protocol alone
	}
	for _, m := range losers {
		if m.External.Port() == won.External.Port() {
			won.also = append(won.also, m)
		} else {
			// A loser's mapping on a port of its own is not left open;
			// one on the winner's port is deleted with it (Unmap).
			dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
			_ = c.Unmap(dctx, m)
			dcancel()
		}
	}
	return won, nil
}

// Map asks for one protocol's mapping of internal (renewing prev, if it is
// that protocol's).
func (c *Client) Map(ctx context.Context, p Protocol, internal uint16, prev *Mapping, lifetime time.Duration) (Mapping, error) {
	if !c.Gateway.Is4() {
		return Mapping{}, ErrNoGateway
	}
	if prev != nil && prev.Protocol != p {
		prev = nil
	}
	m := Mapping{Protocol: p, Gateway: c.Gateway, Internal: internal}
	var err error
	switch p {
	case NATPMP:
		err = c.mapNATPMP(ctx, &m, prev, lifetime)
	case PCP:
		err = c.mapPCP(ctx, &m, prev, lifetime)
	case UPnP:
		err = c.mapUPnP(ctx, &m, prev, lifetime)
	default:
		err = fmt.Errorf("unknown protocol %d", p)
	}
	return m, err
}

func (c *Client) mapNATPMP(ctx context.Context, m *Mapping, prev *Mapping, lifetime time.Duration) error {
	var ext netip.Addr
	err := c.exchange(ctx, natpmpAddressRequest(), func(b []byte) (ok bool, err error) {
		ext, _, ok, err = parseNATPMPAddress(b)
		return ok, err
	})
	if err != nil {
		return err
	}
	want := m.Internal
	if prev != nil {
		want = prev.External.Port()
	}
	var a natpmpMapAnswer
	err = c.exchange(ctx, natpmpMapRequest(m.Internal, want, lifetime), func(b []byte) (ok bool, err error) {
		a, ok, err = parseNATPMPMap(b, m.Internal)
		return ok, err
	})
	if err != nil {
		return err
	}
	if a.external == 0 || a.lifetime == 0 {
		return fmt.Errorf("natpmp: %w: no port or lifetime granted", errMalformed)
	}
	m.External, m.Lifetime, m.Epoch = netip.AddrPortFrom(ext, a.external), a.lifetime, a.epoch
	return nil
}

func (c *Client) mapPCP(ctx context.Context, m *Mapping, prev *Mapping, lifetime time.Duration) error {
	var want netip.AddrPort
	if prev != nil {
		m.nonce, want = prev.nonce, prev.External
	} else {
		rand.Read(m.nonce[:])
		want = netip.AddrPortFrom(netip.Addr{}, m.Internal)
	}
	var a pcpAnswer
	err := c.exchangeFrom(ctx, func(local netip.Addr) []byte {
		return pcpMapRequest(local, m.Internal, want, lifetime, m.nonce)
	}, func(b []byte) (ok bool, err error) {
		a, ok, err = parsePCPMap(b, m.Internal, m.nonce)
		return ok, err
	})
	if err != nil {
		return err
	}
	if a.external.Port() == 0 || a.lifetime == 0 {
		return fmt.Errorf("pcp: %w: no port or lifetime granted", errMalformed)
	}
	if !a.external.Addr().Is4() || a.external.Addr().IsUnspecified() {
		a.external = netip.AddrPortFrom(netip.Addr{}, a.external.Port())
	}
	m.External, m.Lifetime, m.Epoch = a.external, a.lifetime, a.epoch
	return nil
}

func (c *Client) mapUPnP(ctx context.Context, m *Mapping, prev *Mapping, lifetime time.Duration) error {
	local, err := c.localAddr(ctx)
	if err != nil {
		return err
	}
	want := m.Internal
	port, err := uint16(0), error(nil)
	if prev != nil && prev.upnp != nil {
		m.upnp, want = prev.upnp, prev.External.Port()
		port, err = m.upnp.add(ctx, want, m.Internal, local, seconds(lifetime))
	}
	// No service yet, or the one we knew is gone (a restarted router may
	// serve on another port): find it anew.
	if m.upnp == nil || err != nil && upnpCode(err) == 0 {
		var derr error
		if m.upnp, derr = c.discover(ctx); derr != nil {
			return derr
		}
		port, err = m.upnp.add(ctx, want, m.Internal, local, seconds(lifetime))
	}
	if err != nil {
		return upnpError(err)
	}
	m.External = netip.AddrPortFrom(m.upnp.externalAddr(ctx), port)
	m.Lifetime = lifetime
	return nil
}

// Unmap deletes m from the router.
func (c *Client) Unmap(ctx context.Context, m Mapping) error {
	err := c.unmapOne(ctx, m)
	for _, other := range m.also {
		if c.unmapOne(ctx, other) == nil {
			err = nil // the router's rule was that protocol's
		}
	}
	return err
}

func (c *Client) unmapOne(ctx context.Context, m Mapping) error {
	switch m.Protocol {
	case NATPMP:
		return c.exchange(ctx, natpmpMapRequest(m.Internal, 0, 0), func(b []byte) (bool, error) {
			_, ok, err := parseNATPMPMap(b, m.Internal)
			return ok, err
		})
	case PCP:
		return c.exchangeFrom(ctx, func(local netip.Addr) []byte {
			return pcpMapRequest(local, m.Internal, m.External, 0, m.nonce)
		}, func(b []byte) (bool, error) {
			_, ok, err := parsePCPMap(b, m.Internal, m.nonce)
			return ok, err
		})
	case UPnP:
		if m.upnp == nil {
			return nil
		}
		return upnpError(m.upnp.svc.DeletePortMappingCtx(ctx, "", m.External.Port(), "UDP"))
	}
	return nil
}

// Probe reports whether the gateway answers protocol p (for netcheck):
// NAT-PMP its address request, PCP an ANNOUNCE, UPnP an SSDP search and a
// WAN connection service on it.
func (c *Client) Probe(ctx context.Context, p Protocol) error {
	if !c.Gateway.Is4() {
		return ErrNoGateway
	}
	switch p {
	case NATPMP:
		return c.exchange(ctx, natpmpAddressRequest(), func(b []byte) (bool, error) {
			_, _, ok, err := parseNATPMPAddress(b)
			return ok, err
		})
	case PCP:
		return c.exchangeFrom(ctx, func(local netip.Addr) []byte {
			b := pcpMapRequest(local, 0, netip.AddrPort{}, 0, [12]byte{})
			b[1] = pcpOpAnnounce
			return b[:pcpHeaderLen]
		}, func(b []byte) (bool, error) {
			if len(b) >= 4 && b[0] == natpmpVersion && b[1] >= natpmpAnswer {
				return true, &RefusedError{Protocol: PCP, Code: 1}
			}
			if len(b) < pcpHeaderLen || b[0] != pcpVersion || b[1] != pcpResponse|pcpOpAnnounce {
				return false, nil
			}
			if b[3] != 0 {
				return true, &RefusedError{Protocol: PCP, Code: int(b[3])}
			}
			return true, nil
		})
	case UPnP:
		_, err := c.discover(ctx)
		return err
	}
	return fmt.Errorf("unknown protocol %d", p)
}

func (c *Client) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.Dial != nil {
		return c.Dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (c *Client) serverAddr() string {
	port := c.serverPort
	if port == 0 {
		port = ServerPort
	}
	return net.JoinHostPort(c.Gateway.String(), strconv.Itoa(port))
}

// localAddr is our address towards the gateway (the socket is never used).
func (c *Client) localAddr(ctx context.Context) (netip.Addr, error) {
	conn, err := c.dial(ctx, "udp4", c.serverAddr())
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	ap, err := netip.ParseAddrPort(conn.LocalAddr().String())
	return ap.Addr().Unmap(), err
}

func (c *Client) exchange(ctx context.Context, req []byte, accept func([]byte) (bool, error)) error {
	return c.exchangeFrom(ctx, func(netip.Addr) []byte { return req }, accept)
}

// exchangeFrom sends the request made for our local address to the
// gateway's NAT-PMP/PCP port, resending it at doubling intervals, until
// accept takes an answer or ctx ends. Only the gateway's answers reach a
// connected socket.
func (c *Client) exchangeFrom(ctx context.Context, req func(local netip.Addr) []byte, accept func([]byte) (bool, error)) error {
	conn, err := c.dial(ctx, "udp4", c.serverAddr())
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	local, err := netip.ParseAddrPort(conn.LocalAddr().String())
	if err != nil {
		return err
	}
	msg := req(local.Addr().Unmap())
	buf := make([]byte, 1100) // PCP's largest message
	for wait := firstWait; ; wait *= 2 {
		if _, err := conn.Write(msg); err != nil {
			return fmt.Errorf("%w: %v", ErrNoAnswer, err)
		}
		conn.SetReadDeadline(time.Now().Add(wait))
		for {
			n, err := conn.Read(buf)
			if ctx.Err() != nil {
				return ErrNoAnswer
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break // resend
			}
			if err != nil {
				return fmt.Errorf("%w: %v", ErrNoAnswer, err) // port closed (ICMP)
			}
			if ok, err := accept(buf[:n]); ok {
				return err
			}
		}
	}
}

// discover finds the gateway's IGD service by SSDP: the first answer
// whose description has one on the gateway. Each description named is
// tried once, in the order the answers came; another host on the LAN can
// answer in the gateway's name, so one answer that leads nowhere does not
// end the search.
func (c *Client) discover(ctx context.Context) (*upnpClient, error) {
	listen := c.ListenPacket
	if listen == nil {
		var lc net.ListenConfig
		listen = lc.ListenPacket
	}
	pc, err := listen(ctx, "udp4", ":0")
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Now()) })
	defer stop()
	group := c.ssdpAddr
	if group == "" {
		group = ssdpGroup
	}
	dst, err := net.ResolveUDPAddr("udp4", group)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, maxSSDPAnswer+1)
	tried := map[string]bool{}
	var lastErr error // of the last description tried
rounds:
	for wait := firstWait; ; wait *= 2 {
		for _, st := range []string{igdType2, igdType1} {
			if _, err := pc.WriteTo(ssdpSearch(st), dst); err != nil {
				return nil, fmt.Errorf("upnp: %w: %v", ErrNoAnswer, err)
			}
		}
		pc.SetReadDeadline(time.Now().Add(wait))
		for {
			n, src, err := pc.ReadFrom(buf)
			var ne net.Error
			roundOver := errors.As(err, &ne) && ne.Timeout()
			switch {
			case (roundOver || ctx.Err() != nil) && lastErr != nil:
				return nil, lastErr // answers came, none led to the gateway's service
			case ctx.Err() != nil:
				return nil, ErrNoAnswer
			case roundOver:
				continue rounds
			}
			if err != nil {
				return nil, err
			}
			if ua, ok := src.(*net.UDPAddr); !ok || ua.AddrPort().Addr().Unmap() != c.Gateway {
				continue // only the gateway's answers count
			}
			loc, ok := parseSSDPAnswer(buf[:n], c.Gateway)
			if !ok || tried[loc.String()] {
				continue
			}
			tried[loc.String()] = true
			svc, err := upnpServiceAt(ctx, loc, c.Gateway)
			if err == nil {
				return svc, nil
			}
			lastErr = err
			pc.SetReadDeadline(time.Now().Add(wait)) // the answers that came meanwhile wait in the socket
		}
	}
}
