// Package tunnel is the punchtun peer: a TUN interface, a wireguard-go
// device, and the one UDP socket WireGuard shares with the control plane
// that finds each peer's path. This package only wires the rooms below it
// together and serves what the command line asks of a running interface:
//
//   - tunnel/config   the config file (wg-quick's, plus the rendezvous)
//   - tunnel/bind     the data path: the shared socket (a conn.Bind), each
//     peer's route, side sockets, TUN batching
//   - tunnel/control  the control plane: rendezvous, NAT discovery,
//     punching, relays, TCP and TURN, ping, the published view
//   - tunnel/link     the seam between those two: routes and interfaces
//   - tunnel/osnet    the host: addresses, routes, full tunnel, DNS,
//     hooks, network changes
//   - tunnel/names    DNS for the peers' names
//
// Up brings an interface up, Reload applies a changed config, Close takes
// it down; Status, Ping and SyncConf, served on the status socket
// (StatusSocket), are what `punchtun status`, `ping` and `syncconf` ask
// a running one.
package tunnel

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/punchtun/punchtun/nat/portmap"
	"github.com/punchtun/punchtun/tunnel/bind"
	"github.com/punchtun/punchtun/tunnel/config"
	"github.com/punchtun/punchtun/tunnel/control"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/names"
	"github.com/punchtun/punchtun/tunnel/osnet"
	"github.com/punchtun/punchtun/tunnel/tundev"
)

// DefaultRunDir holds each running interface's status socket.
const DefaultRunDir = "/var/run/punchtun"

// DefaultStateDir keeps what a tunnel remembers across restarts.
const DefaultStateDir = "/var/lib/punchtun"

// Options are the settings of Up that are not in the config file.
type Options struct {
	Interface string // the interface name
	RunDir    string // status sockets; DefaultRunDir if empty
	StateDir  string // what is remembered across restarts; DefaultStateDir if empty, "-" for nothing
	Logger    *slog.Logger
	// ConfigFile is the file the config was read from: what a reload
	// reads again (Reload, `punchtun syncconf IFACE`).
	ConfigFile string
	Userspace  UserspaceOptions // userspace mode's command-line settings
}

// Tunnel is a running interface.
type Tunnel struct {
	name       string
	log        *slog.Logger
	runDir     string
	configFile string
	table      osnet.Table
	hostIface  osnet.Interface
	// mark is the FwMark on every socket of ours: the config's, or the
	// full tunnel's table; 0 for none.
	mark uint32
	// names answers DNS for the peers' names; nil without Domain.
	names *names.Server
	// user is the userspace stack and its proxies; nil with a TUN.
	user *userspaceSide

	// cfgMu guards cfg, which a reload replaces; reloadMu makes reloads
	// one at a time.
	cfgMu    sync.Mutex
	cfg      *config.Config
	reloadMu sync.Mutex

	// workers are the goroutines of the status and UAPI sockets and the
	// memory releaser (spawn); Close waits for them.
	workers sync.WaitGroup

	listenPort uint16 // ListenPort, or the last run's port

	dev     *device.Device
	bind    *bind.Bind
	tun     *tundev.Device // the TUN as wireguard-go sees it
	ctl     *control.Control
	closers []func() // undo what Up did, in reverse
}

// dataPath is what the control plane steers (link.DataPath): the socket,
// and the TUN's side for the members' addresses.
type dataPath struct {
	*bind.Bind
	tunSide
}

// tunSide is tundev.Device's part of link.DataPath.
type tunSide interface {
	AddDestinations(addrs []netip.Addr)
	RemoveDestinations(addrs []netip.Addr)
	Inject(pkt []byte)
}

var _ link.DataPath = dataPath{}

// Up brings up the interface described by cfg and returns once WireGuard
// runs and the control plane has started. On error, everything it created
// is gone again.
func Up(cfg *config.Config, opts Options) (_ *Tunnel, err error) {
	t := &Tunnel{name: opts.Interface, cfg: cfg, log: opts.Logger, runDir: opts.RunDir, configFile: opts.ConfigFile}
	if t.log == nil {
		t.log = slog.Default()
	}
	if t.runDir == "" {
		t.runDir = RunDir()
	}
	defer func() {
		if err != nil {
			t.undo()
		}
	}()
	// Runs last: every goroutine Up started has ended when Close returns.
	t.closers = append(t.closers, t.workers.Wait)
	mtu := cmp.Or(cfg.Interface.MTU, config.DefaultMTU)

	var (
		statePath string
		saved     control.State
	)
	if opts.StateDir != "-" {
		statePath = control.StatePath(cmp.Or(opts.StateDir, StateDir()), t.name)
		if saved, err = control.LoadState(statePath); err != nil {
			t.log.Warn("ignoring unreadable state file", "file", statePath, "err", err)
		}
		warnUnwritable(t.log, statePath)
	}
	if t.table, err = osnet.ParseTable(cfg.Interface.Table); err != nil {
		return nil, cfg.KeyError("Table", "%v", err)
	}
	userMode := opts.Userspace.Enabled || cfg.Interface.Userspace
	defaults := defaultRoutes(cfg)
	if userMode {
		defaults = nil
	} else {
		t.mark = cfg.Interface.FwMark
	}
	if len(defaults) > 0 && t.table == osnet.TableMain && t.mark == 0 {
		if t.mark, err = osnet.FreeTable(); err != nil {
			return nil, err
		}
	}
	t.listenPort = cfg.Interface.ListenPort
	if t.listenPort == 0 && saved.ListenPort != 0 && portFree(saved.ListenPort) {
		// The port of the last run: the NAT may still map it, and the
		// peers' NATs still let it in.
		t.listenPort = saved.ListenPort
	}
	// Resolve fixed endpoints first: a name that does not resolve fails
	// before anything exists.
	uapi, err := t.uapiConfig()
	if err != nil {
		return nil, err
	}
	var tdev tun.Device
	if userMode {
		if t.user, err = openUserspace(t.log, cfg, opts.Userspace, mtu); err != nil {
			return nil, err
		}
		t.closers = append(t.closers, t.user.close)
		t.hostIface, tdev = userspaceInterface{}, t.user.stack.Device()
	} else if tdev, err = t.openTUN(cfg, mtu); err != nil {
		return nil, err
	}

	t.ctl = control.New(t.log, controlConfigOf(cfg, t.name, mtu), statePath, saved)
	t.bind = bind.New(cfg.Interface.PrivateKey.Public(), t.ctl.Events())
	for _, p := range cfg.Peers {
		if p.Endpoint == "" {
			t.bind.PeerEndpoint(p.PublicKey)
		}
	}
	t.tun = tundev.New(tdev, t.ctl.Filter().Wrap, t.ctl.Events().UnknownDestination)
	t.dev = device.NewDevice(t.tun, t.tun.Bind(t.bind), deviceLogger(t.log))
	t.tun.SetNetwork(cfg.Interface.NetworkPrefixes(), staticAllowedIPs(cfg))
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
	if err := t.hostIface.Configure(t.hostIfaceConfig(cfg)); err != nil {
		return nil, err
	}
	if len(defaults) > 0 && t.table == osnet.TableMain {
		undo, err := t.hostIface.FullTunnel(t.mark, defaults)
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
	var members names.Members // the member names the config lacks
	if cfg.Interface.Certificate != nil {
		members = t.ctl
	}
	if cfg.Interface.Domain != "" {
		// The host's resolvers before DNS = replaces them.
		var on names.Network = names.HostNetwork{}
		if userMode {
			on = t.user.stack
		}
		t.names, err = names.StartOn(on, t.log, cfg, names.UpstreamResolvers("/etc/resolv.conf", cfg.Interface.Addresses), members)
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, t.names.Close)
	}
	if len(cfg.Interface.DNS)+len(cfg.Interface.DNSSearch) > 0 && !userMode {
		unset, err := osnet.SetDNS(t.name, cfg.Interface.DNS, cfg.Interface.DNSSearch)
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, func() {
			if err := unset(); err != nil {
				t.log.Warn("cannot remove the tunnel's DNS", "err", err)
			}
		})
	}
	// wg's socket directory, /var/run/wireguard, is root's: in userspace
	// mode, status shows the peers.
	if !userMode {
		if err := t.serveUAPI(); err != nil {
			return nil, err
		}
	}
	if err := t.serveStatus(); err != nil {
		return nil, err
	}
	t.ctl.Start(dataPath{t.bind, t.tun}, wireGuard{t}, host{t.log, t.name}, t.mark)
	t.closers = append(t.closers, t.ctl.Stop)
	memDone := make(chan struct{})
	t.spawn(func() { t.bind.ReleaseMemory(memDone) })
	t.closers = append(t.closers, func() { close(memDone) })
	if userMode {
		if err := t.user.serve(t.log, resolverFor(t.names, cfg, members)); err != nil {
			return nil, err
		}
	} else if err := t.runUpHooks(cfg); err != nil {
		return nil, err
	}
	t.log.Info("interface up", "interface", t.name, "public_key", cfg.Interface.PrivateKey.Public(),
		"listen_port", t.ListenPort(), "addresses", cfg.Interface.Addresses, "mtu", mtu, "mode", t.mode())
	warnCertificate(t.log, cfg)
	return t, nil
}

// openTUN opens the host's side of the interface and its TUN device.
func (t *Tunnel) openTUN(cfg *config.Config, mtu int) (tun.Device, error) {
	var err error
	if t.hostIface, err = osnet.Open(t.name, t.table); err != nil {
		return nil, err
	}
	if err := osnet.CheckFree(t.name); err != nil {
		return nil, err
	}
	if err := osnet.RunHooks(t.log, "PreUp", t.name, cfg.Interface.PreUp); err != nil {
		return nil, err
	}
	tdev, err := tun.CreateTUN(t.name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", t.name, err)
	}
	return tdev, nil
}

// runUpHooks runs PostUp, and sets down to run PreDown first and
// PostDown last; a failed up runs neither, as in wg-quick.
func (t *Tunnel) runUpHooks(cfg *config.Config) error {
	if err := osnet.RunHooks(t.log, "PostUp", t.name, cfg.Interface.PostUp); err != nil {
		return err
	}
	t.closers = append([]func(){func() { osnet.RunDownHooks(t.log, "PostDown", t.name, t.config().Interface.PostDown) }}, t.closers...)
	t.closers = append(t.closers, func() { osnet.RunDownHooks(t.log, "PreDown", t.name, t.config().Interface.PreDown) })
	return nil
}

// spawn runs f on a goroutine that Close waits for.
func (t *Tunnel) spawn(f func()) {
	t.workers.Add(1)
	go func() {
		defer t.workers.Done()
		f()
	}()
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

// controlConfigOf is what the control plane takes of a config: the
// rendezvous, and the peers it finds (those without a fixed Endpoint).
func controlConfigOf(cfg *config.Config, iface string, mtu int) control.Config {
	cc := control.Config{PrivateKey: cfg.Interface.PrivateKey, Interface: iface, Addresses: cfg.Interface.Addresses, MTU: mtu,
		Network: cfg.Interface.Network, Cert: cfg.Interface.Certificate, Static: staticAllowedIPs(cfg), Documents: cfg.Interface.Documents}
	cc.PortMapping, _ = portmap.ParseMode(cfg.Interface.PortMapping) // checked by the parser
	cc.NoLocalCandidates = cfg.Interface.NoLocalCandidates
	for i, hp := range cfg.Interface.Rendezvous {
		cc.Servers = append(cc.Servers, control.ServerConfig{HostPort: hp, Key: cfg.Interface.RendezvousKey[i]})
	}
	for _, p := range cfg.Peers {
		if p.Endpoint == "" {
			cc.Peers = append(cc.Peers, control.PeerConfig{Name: p.Name, Key: p.PublicKey})
		}
	}
	return cc
}

// staticAllowedIPs are every static peer's AllowedIPs: never held for a
// member, and never a member's.
func staticAllowedIPs(cfg *config.Config) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range cfg.Peers {
		out = append(out, p.AllowedIPs...)
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
