// Package tunnel is the punchtun peer: a TUN interface, a wireguard-go
// device, and the one UDP socket (Bind) that WireGuard shares with the
// control plane that finds each peer's path.
package tunnel

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/config"
)

// DefaultRunDir holds each running interface's status socket.
const DefaultRunDir = "/var/run/punchtun"

// Options are the settings of Up that are not in the config file.
type Options struct {
	Interface string // the interface name
	RunDir    string // status sockets; DefaultRunDir if empty
	StateDir  string // what is remembered across restarts; DefaultStateDir if empty, "-" for nothing
	Logger    *slog.Logger
	// ConfigFile is the file the config was read from: what a reload
	// reads again (Reload, `punchtun syncconf IFACE`).
	ConfigFile string
}

// Tunnel is a running interface.
type Tunnel struct {
	name       string
	log        *slog.Logger
	runDir     string
	configFile string
	table      routeTable
	// mark is the FwMark on every socket of ours: the config's, or the
	// full tunnel's table (fulltunnel_linux.go); 0 for none.
	mark uint32
	// names answers DNS for the peers' names (names.go); nil without Domain.
	names *nameServer

	// cfgMu guards cfg, which a reload replaces; reloadMu makes reloads
	// one at a time.
	cfgMu    sync.Mutex
	cfg      *config.Config
	reloadMu sync.Mutex

	// workers are the goroutines of the status and UAPI sockets and the
	// memory releaser (spawn); Close waits for them.
	workers sync.WaitGroup

	statePath  string // "" when nothing is remembered
	listenPort uint16 // ListenPort, or the last run's port

	dev     *device.Device
	bind    *Bind
	ctl     *control
	closers []func() // undo what Up did, in reverse
}

// Up brings up the interface described by cfg and returns once WireGuard
// runs and the control plane has started. On error, everything it created
// is gone again.
func Up(cfg *config.Config, opts Options) (_ *Tunnel, err error) {
	t := &Tunnel{name: opts.Interface, cfg: cfg, log: opts.Logger, runDir: opts.RunDir, configFile: opts.ConfigFile}
	if t.log == nil {
		t.log = slog.Default()
	}
	if t.runDir == "" {
		t.runDir = DefaultRunDir
	}
	defer func() {
		if err != nil {
			t.undo()
		}
	}()
	// Runs last: every goroutine Up started has ended when Close returns.
	t.closers = append(t.closers, t.workers.Wait)
	mtu := cfg.Interface.MTU
	if mtu == 0 {
		mtu = config.DefaultMTU
	}

	// Resolve fixed endpoints first: a name that does not resolve fails
	// before anything exists.
	var saved savedState
	if opts.StateDir != "-" {
		t.statePath = statePath(cmp.Or(opts.StateDir, DefaultStateDir), t.name)
		if saved, err = loadState(t.statePath); err != nil {
			t.log.Warn("ignoring unreadable state file", "file", t.statePath, "err", err)
		}
		warnUnwritable(t.log, t.statePath)
	}
	if t.table, err = parseTable(cfg.Interface.Table); err != nil {
		return nil, cfg.KeyError("Table", "%v", err)
	}
	t.mark = cfg.Interface.FwMark
	defaults := defaultRoutes(cfg)
	if len(defaults) > 0 && t.table == tableMain && t.mark == 0 {
		if t.mark, err = freeTable(); err != nil {
			return nil, err
		}
	}
	t.listenPort = cfg.Interface.ListenPort
	if t.listenPort == 0 && saved.ListenPort != 0 && portFree(saved.ListenPort) {
		// The port of the last run: the NAT may still map it, and the
		// peers' NATs still let it in.
		t.listenPort = saved.ListenPort
	}
	uapi, err := t.uapiConfig()
	if err != nil {
		return nil, err
	}
	if err := canConfigure(); err != nil {
		return nil, err
	}
	if err := checkInterfaceFree(t.name); err != nil {
		return nil, err
	}
	if err := runHooks(t.log, "PreUp", t.name, cfg.Interface.PreUp); err != nil {
		return nil, err
	}
	tdev, err := tun.CreateTUN(t.name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", t.name, err)
	}

	cc := controlConfigOf(cfg, mtu)
	t.ctl = newControl(t.log, cfg.Interface.PrivateKey, t.name, cfg.Interface.Addresses, cc.servers, cc.peers)
	t.ctl.statePath, t.ctl.saved = t.statePath, saved
	t.ctl.ifaceMTU = mtu
	t.bind = NewBind(cfg.Interface.PrivateKey.Public(), t.ctl.deliver)
	for _, p := range cc.peers {
		t.bind.PeerEndpoint(p.Key)
	}
	t.dev = device.NewDevice(&boundedTUN{Device: newBatchingTUN(tdev, t.bind.out.room), in: t.bind.in, out: t.bind.out}, t.bind, deviceLogger(t.log))
	t.closers = append(t.closers, t.dev.Close) // closes the TUN, which removes the interface

	if err := t.dev.IpcSet(uapi); err != nil {
		return nil, fmt.Errorf("configure WireGuard: %w", err)
	}
	// wireguard-go also brings the device up when the TUN reports itself
	// up, and a failed attempt resets the port to 0: so a busy ListenPort
	// can show as success on a random port. Check the port we got.
	upErr := t.dev.Up()
	if want := cfg.Interface.ListenPort; want != 0 && t.ListenPort() != want {
		return nil, fmt.Errorf("UDP port %d is in use (ListenPort)", want)
	}
	if upErr != nil {
		return nil, fmt.Errorf("open UDP port: %w", upErr)
	}
	if err := configureInterface(t.name, mtu, cfg.Interface.Addresses, t.routes(cfg), t.table); err != nil {
		return nil, err
	}
	if len(defaults) > 0 && t.table == tableMain {
		undo, err := setFullTunnel(t.name, t.mark, defaults)
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, func() {
			if err := undo(); err != nil {
				t.log.Warn("cannot undo the full tunnel's routing", "err", err)
			}
		})
		t.log.Info("full tunnel: everything but punchtun's own traffic goes through the tunnel", "table", t.mark, "fwmark", t.mark, "routes", defaults)
	}
	if cfg.Interface.Domain != "" {
		// The host's resolvers before DNS = replaces them.
		t.names, err = startNames(t.log, cfg, upstreamResolvers("/etc/resolv.conf", cfg.Interface.Addresses))
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, t.names.close)
	}
	if len(cfg.Interface.DNS)+len(cfg.Interface.DNSSearch) > 0 {
		unset, err := setDNS(t.name, cfg.Interface.DNS, cfg.Interface.DNSSearch)
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, func() {
			if err := unset(); err != nil {
				t.log.Warn("cannot remove the tunnel's DNS", "err", err)
			}
		})
	}
	if err := t.serveUAPI(); err != nil {
		return nil, err
	}
	if err := t.serveStatus(); err != nil {
		return nil, err
	}
	t.ctl.start(t.bind, t, t.mark)
	t.closers = append(t.closers, t.ctl.stop)
	memDone := make(chan struct{})
	t.spawn(func() { t.bind.releaseMemory(memDone) })
	t.closers = append(t.closers, func() { close(memDone) })
	if err := runHooks(t.log, "PostUp", t.name, cfg.Interface.PostUp); err != nil {
		return nil, err
	}
	// Down runs PreDown first and PostDown last; a failed up runs
	// neither, as in wg-quick.
	t.closers = append([]func(){func() { runDownHooks(t.log, "PostDown", t.name, t.config().Interface.PostDown) }}, t.closers...)
	t.closers = append(t.closers, func() { runDownHooks(t.log, "PreDown", t.name, t.config().Interface.PreDown) })
	t.log.Info("interface up", "interface", t.name, "public_key", cfg.Interface.PrivateKey.Public(),
		"listen_port", t.ListenPort(), "addresses", cfg.Interface.Addresses, "mtu", mtu)
	return t, nil
}

// spawn runs f on a goroutine that Close waits for.
func (t *Tunnel) spawn(f func()) {
	t.workers.Add(1)
	go func() {
		defer t.workers.Done()
		f()
	}()
}

// connSet tracks a listener's open connections, to close them at down.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newConnSet() *connSet { return &connSet{conns: map[net.Conn]struct{}{}} }

// add tracks c; false (and c closed) once closeAll ran.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

// config is the configuration in force.
func (t *Tunnel) config() *config.Config {
	t.cfgMu.Lock()
	defer t.cfgMu.Unlock()
	return t.cfg
}

// Close tears everything down: it deregisters from the rendezvous and
// removes the interface, its routes and its sockets.
func (t *Tunnel) Close() { t.undo() }

func (t *Tunnel) undo() {
	for i := len(t.closers) - 1; i >= 0; i-- {
		t.closers[i]()
	}
	t.closers = nil
}

// Done is closed when WireGuard stops on its own (the TUN went away).
func (t *Tunnel) Done() <-chan struct{} { return t.dev.Wait() }

// ListenPort is the UDP port the shared socket is bound to.
func (t *Tunnel) ListenPort() uint16 { return t.bind.Port() }

// repoint makes WireGuard send to peer's PeerEndpoint again: its roaming
// may have followed a packet from an address the control plane did not
// know yet, and a route change must take effect.
func (t *Tunnel) repoint(peer key.Key) {
	t.dev.IpcSet(fmt.Sprintf("public_key=%s\nupdate_only=true\nendpoint=%s%s\n", hex.EncodeToString(peer[:]), endpointPrefix, peer))
}

func (t *Tunnel) setPeerMTU(peer key.Key, mtu int) error {
	for _, p := range t.config().Peers {
		if p.PublicKey == peer {
			return setRouteMTU(t.name, p.AllowedIPs, mtu, t.table)
		}
	}
	return nil
}

func (t *Tunnel) handshakeIfNone(peer key.Key) {
	if wg, err := t.wireGuardPeers(); err != nil || !wg[peer].handshake.IsZero() {
		return
	}
	// With handshake messages under way this is rare, and WireGuard's own
	// retry (5 s) decides when the next initiation leaves: say what the
	// Bind saw, so that a slow start can be understood from a log at the
	// default level. (An idle peer simply has had no handshake yet.)
	if pe := t.bind.PeerEndpoint(peer); pe.handshaking(time.Now()) {
		t.log.Info("no WireGuard session yet after the path changed", "peer", peer, "handshake", pe.handshakeState(time.Now()))
	}
	if p := t.dev.LookupPeer(device.NoisePublicKey(peer)); p != nil {
		p.SendHandshakeInitiation(false)
	}
}

// uapiConfig renders the config in WireGuard's configuration protocol.
// Peers found through the rendezvous get their PeerEndpoint.
func (t *Tunnel) uapiConfig() (string, error) {
	var b strings.Builder
	ic := t.cfg.Interface
	fmt.Fprintf(&b, "private_key=%s\nlisten_port=%d\n", hex.EncodeToString(ic.PrivateKey[:]), t.listenPort)
	if t.mark != 0 {
		fmt.Fprintf(&b, "fwmark=%d\n", t.mark)
	}
	b.WriteString("replace_peers=true\n")
	for _, p := range t.cfg.Peers {
		if err := uapiPeer(&b, p); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

// uapiPeer renders one peer, all of it: added, or replacing what
// WireGuard has of it (its session stays).
func uapiPeer(b *strings.Builder, p config.Peer) error {
	fmt.Fprintf(b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
	// An all-zero key is WireGuard's "none": a reload that removes the
	// PresharedKey line takes it away.
	fmt.Fprintf(b, "preshared_key=%s\n", hex.EncodeToString(p.PresharedKey[:]))
	if p.Endpoint != "" {
		ep, err := nat.Resolve(context.Background(), p.Endpoint)
		if err != nil {
			return fmt.Errorf("peer %s: endpoint %s: %w", peerLabel(p), p.Endpoint, err)
		}
		fmt.Fprintf(b, "endpoint=%s\n", ep)
	} else {
		fmt.Fprintf(b, "endpoint=%s%s\n", endpointPrefix, p.PublicKey)
	}
	fmt.Fprintf(b, "persistent_keepalive_interval=%d\n", p.PersistentKeepalive)
	b.WriteString("replace_allowed_ips=true\n")
	for _, ip := range p.AllowedIPs {
		fmt.Fprintf(b, "allowed_ip=%s\n", ip)
	}
	return nil
}

// routes are the peers' AllowedIPs that the interface's own prefixes do not
// already route. With Table = auto, a default route (0.0.0.0/0, ::/0) is
// left to the full tunnel's policy routing (setFullTunnel): a plain
// default route would swallow the tunnel's own packets.
func (t *Tunnel) routes(cfg *config.Config) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range cfg.Peers {
	next:
		for _, ip := range p.AllowedIPs {
			if ip.Bits() == 0 && t.table == tableMain {
				continue
			}
			for _, a := range cfg.Interface.Addresses {
				if a.Masked().Contains(ip.Addr()) && a.Bits() <= ip.Bits() {
					continue next
				}
			}
			out = append(out, ip)
		}
	}
	return out
}

// defaultRoutes are the default routes among the peers' AllowedIPs.
func defaultRoutes(cfg *config.Config) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range cfg.Peers {
		for _, ip := range p.AllowedIPs {
			if ip.Bits() == 0 && !slices.Contains(out, ip) {
				out = append(out, ip)
			}
		}
	}
	return out
}

func peerLabel(p config.Peer) string {
	if p.Name != "" {
		return p.Name
	}
	return p.PublicKey.String()
}

func deviceLogger(log *slog.Logger) *device.Logger {
	ctx := context.Background()
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(ctx, slog.LevelDebug) {
				log.Debug(fmt.Sprintf(format, args...), "from", "wireguard")
			}
		},
		Errorf: func(format string, args ...any) {
			log.Warn(fmt.Sprintf(format, args...), "from", "wireguard")
		},
	}
}

// checkInterfaceFree fails if an interface of that name exists: taking over
// somebody else's interface, or deleting it on exit, would be worse.
func checkInterfaceFree(name string) error {
	if _, err := net.InterfaceByName(name); err == nil {
		return fmt.Errorf("interface %s already exists", name)
	}
	return nil
}
