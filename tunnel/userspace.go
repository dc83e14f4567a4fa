package tunnel

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/config"
	"github.com/punchtun/punchtun/tunnel/names"
	"github.com/punchtun/punchtun/tunnel/osnet"
	"github.com/punchtun/punchtun/tunnel/userspace"
)

// Userspace mode (tunnel/userspace): the interface's addresses live in an
// in-process stack, the host is left alone (no TUN, routes, DNS or
// hooks), and the host reaches the network through the proxies, `punchtun
// nc` (a "dial" request on the status socket) and the forwards.

// DefaultSOCKS5 is where the SOCKS5 proxy listens in userspace mode
// unless told otherwise.
const DefaultSOCKS5 = "127.0.0.1:1080"

// UserspaceOptions are userspace mode's command-line settings; they take
// precedence over the config's.
type UserspaceOptions struct {
	Enabled bool // --userspace
	// SOCKS5 and HTTPProxy are --socks5 and --http-proxy: "" when not
	// given. Only a flag may make a proxy listen beyond loopback.
	SOCKS5, HTTPProxy string
	Forward           []config.Forward // --forward, added to the config's
}

// userspaceSide is a userspace interface's stack and what serves it.
type userspaceSide struct {
	stack    *userspace.Stack
	resolver *names.Resolver
	dialer   *userspace.Dialer
	// socksLn and httpLn are opened at up, served once the control plane
	// runs (nil: off).
	socksLn, httpLn net.Listener
	socks           *userspace.SOCKS5
	http            *userspace.HTTPProxy
	fwd             *userspace.Forwarder
	forwards        []config.Forward

	// routesMu guards what routes the peers for the stack: the static
	// peers' AllowedIPs and the members', as WireGuard has them.
	routesMu sync.Mutex
	static   []config.Peer
	members  map[key.Key][]netip.Prefix
}

// resolverFor is what the proxies resolve names with: the names
// server's when there is one (Domain), so that a reload updates both at
// once; members finds a network's members (nil: no network).
func resolverFor(ns *names.Server, cfg *config.Config, members names.Members) *names.Resolver {
	if ns != nil {
		return ns.Resolver
	}
	return names.NewResolver(cfg, members)
}

// statusOf fills in userspace mode's part of st.
func (u *userspaceSide) statusOf(st *Status) {
	if u.socksLn != nil {
		st.SOCKS5 = u.socksLn.Addr().String()
	}
	if u.httpLn != nil {
		st.HTTPProxy = u.httpLn.Addr().String()
	}
	dropped, refused := u.stack.Dropped(), u.stack.ICMPRefused()
	st.StackDropped, st.StackICMPRefused = &dropped, &refused
	st.Forwards = []string{}
	for _, f := range u.forwards {
		st.Forwards = append(st.Forwards, f.String())
	}
}

// userspaceInterface is the host side of a userspace interface: nothing to do.
// The stack holds the addresses it was created with; checkUserspaceLive
// refuses a reload that changes them.
type userspaceInterface struct{}

func (userspaceInterface) Configure(osnet.Config) error                       { return nil }
func (userspaceInterface) Reconfigure(old, cfg osnet.Config) error            { return nil }
func (userspaceInterface) SetRouteMTU(prefixes []netip.Prefix, mtu int) error { return nil }
func (userspaceInterface) FullTunnel(uint32, []netip.Prefix) (func() error, error) {
	return func() error { return nil }, nil
}

// openUserspace creates the stack and opens the proxies' listeners, so
// that a busy port fails Up before anything else runs.
func openUserspace(log *slog.Logger, cfg *config.Config, o UserspaceOptions, mtu int) (*userspaceSide, error) {
	warnNotInUserspace(log, cfg)
	u := &userspaceSide{forwards: append(slices.Clone(cfg.Interface.Forward), o.Forward...), members: make(map[key.Key][]netip.Prefix)}
	var err error
	if u.socksLn, err = listenProxy(log, "SOCKS5", o.SOCKS5, cfg.Interface.SOCKS5, DefaultSOCKS5); err != nil {
		return nil, err
	}
	if u.httpLn, err = listenProxy(log, "HTTPProxy", o.HTTPProxy, cfg.Interface.HTTPProxy, config.Off); err != nil {
		u.close()
		return nil, err
	}
	var addrs []netip.Addr
	for _, a := range cfg.Interface.Addresses {
		addrs = append(addrs, a.Addr())
	}
	if u.stack, err = userspace.NewStack(addrs, mtu); err != nil {
		u.close()
		return nil, err
	}
	u.routeStatic(cfg.Peers)
	return u, nil
}

// routeStatic and routeMember tell the stack which addresses each peer
// routes (what it judges ICMP errors by), before WireGuard is told: the
// static peers, at up and at each reload; a member added or given new
// addresses, or taken out (nil).
func (u *userspaceSide) routeStatic(peers []config.Peer) {
	u.routesMu.Lock()
	defer u.routesMu.Unlock()
	u.static = peers
	u.setRoutesLocked()
}

func (u *userspaceSide) routeMember(k key.Key, allowed []netip.Prefix) {
	u.routesMu.Lock()
	defer u.routesMu.Unlock()
	if allowed == nil {
		delete(u.members, k)
	} else {
		u.members[k] = allowed
	}
	u.setRoutesLocked()
}

func (u *userspaceSide) setRoutesLocked() {
	peers := make([][]netip.Prefix, 0, len(u.static)+len(u.members))
	for _, p := range u.static {
		peers = append(peers, p.AllowedIPs)
	}
	for _, allowed := range u.members {
		peers = append(peers, allowed)
	}
	u.stack.SetPeerRoutes(peers)
}

// serve starts the proxies and forwards, resolving with r.
func (u *userspaceSide) serve(log *slog.Logger, r *names.Resolver) error {
	u.resolver = r
	u.dialer = &userspace.Dialer{Stack: u.stack, Resolver: r}
	var err error
	if u.fwd, err = userspace.StartForwards(log, u.stack, u.forwards); err != nil {
		return err
	}
	if u.socksLn != nil {
		u.socks = userspace.ServeSOCKS5(log, u.socksLn, u.dialer)
		log.Info("SOCKS5 proxy into the network", "addr", u.socksLn.Addr().String())
	}
	if u.httpLn != nil {
		u.http = userspace.ServeHTTPProxy(log, u.httpLn, u.dialer)
		log.Info("HTTP proxy into the network", "addr", u.httpLn.Addr().String())
	}
	return nil
}

// close stops what serve started; the stack goes with the WireGuard
// device, which closes it.
func (u *userspaceSide) close() {
	switch {
	case u.socks != nil:
		u.socks.Close()
	case u.socksLn != nil:
		u.socksLn.Close()
	}
	switch {
	case u.http != nil:
		u.http.Close()
	case u.httpLn != nil:
		u.httpLn.Close()
	}
	if u.fwd != nil {
		u.fwd.Close()
	}
}

// listenProxy opens a proxy's listener: flag, else the config's key,
// else def; nil for off. An address beyond loopback opens the network to
// whoever reaches it: the flag must say so, and it is warned about.
func listenProxy(log *slog.Logger, key, flag, conf, def string) (net.Listener, error) {
	addr := cmp.Or(flag, conf, def)
	if strings.EqualFold(addr, config.Off) {
		return nil, nil
	}
	if err := config.CheckProxyAddr(addr); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", key, addr, err)
	}
	if ap, _ := netip.ParseAddrPort(ln.Addr().String()); !ap.Addr().IsLoopback() {
		if flag == "" {
			ln.Close()
			return nil, fmt.Errorf("%s = %s listens beyond loopback, an open door into the network: give it on the command line (--socks5, --http-proxy) to mean it", key, addr)
		}
		log.Warn("the proxy listens beyond loopback: whoever reaches it reaches the network", "proxy", key, "addr", ln.Addr().String())
	}
	return ln, nil
}

// warnNotInUserspace says which of cfg's keys do nothing in userspace mode.
func warnNotInUserspace(log *slog.Logger, cfg *config.Config) {
	in := cfg.Interface
	var keys []string
	for k, set := range map[string]bool{"PreUp": len(in.PreUp) > 0, "PostUp": len(in.PostUp) > 0, "PreDown": len(in.PreDown) > 0,
		"PostDown": len(in.PostDown) > 0, "DNS": len(in.DNS)+len(in.DNSSearch) > 0, "Table": in.Table != "", "FwMark": in.FwMark != 0,
		"AllowedIPs default route (full tunnel)": len(defaultRoutes(cfg)) > 0} {
		if set {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	if len(keys) > 0 {
		log.Warn("userspace mode: these keys do not apply (no host interface, routes, DNS or hooks); reach the network through the proxies, punchtun nc or Forward", "keys", strings.Join(keys, ", "))
	}
}

// checkUserspaceLive refuses a reload that changes what a userspace
// interface set up at up.
func checkUserspaceLive(old, cfg *config.Config) error {
	o, n := old.Interface, cfg.Interface
	switch {
	case o.Userspace != n.Userspace:
		return cfg.KeyError("Userspace", "cannot change while the interface runs; bring it down and up")
	case o.SOCKS5 != n.SOCKS5 || o.HTTPProxy != n.HTTPProxy:
		return cfg.KeyError("SOCKS5", "the proxies cannot change while the interface runs; bring it down and up")
	case !slices.Equal(o.Forward, n.Forward):
		return cfg.KeyError("Forward", "cannot change while the interface runs; bring it down and up")
	case n.Userspace && !slices.Equal(o.Addresses, n.Addresses):
		return cfg.KeyError("Address", "cannot change in userspace mode while the interface runs; bring it down and up")
	}
	return nil
}

// readerConn reads what the request's reader holds first.
type readerConn struct {
	net.Conn
	r *bufio.Reader
}

// Read drains the reader, then lets it go (it is as big as a request
// may be) and reads the connection.
func (c *readerConn) Read(p []byte) (int, error) {
	if c.r != nil && c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	c.r = nil
	return c.Conn.Read(p)
}

func (c *readerConn) CloseWrite() error { return c.Conn.(*net.UnixConn).CloseWrite() }

// Dial connects to host:port through the userspace interface iface runs,
// over its status socket: what `punchtun nc` does.
func Dial(runDir, iface, host string, port int) (net.Conn, error) {
	c, err := dialStatus(runDir, iface)
	if err != nil {
		return nil, err
	}
	line, _ := json.Marshal(request{Request: "dial", Host: host, Port: port})
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write(append(line, '\n')); err != nil {
		c.Close()
		return nil, err
	}
	// Byte by byte: what follows the reply line is the connection's.
	var reply []byte
	for b := make([]byte, 1); len(reply) < 4096; {
		if _, err := c.Read(b); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s did not answer: %w", iface, err)
		}
		if b[0] == '\n' {
			break
		}
		reply = append(reply, b[0])
	}
	var r struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(reply, &r); err != nil || !r.OK {
		c.Close()
		if r.Error == "" {
			r.Error = fmt.Sprintf("unexpected answer %.100q (is %s a punchtun with userspace mode?)", reply, iface)
		}
		return nil, fmt.Errorf("%s", r.Error)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
