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
	"strings"

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
}

// Tunnel is a running interface.
type Tunnel struct {
	name   string
	cfg    *config.Config
	log    *slog.Logger
	runDir string

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
	t := &Tunnel{name: opts.Interface, cfg: cfg, log: opts.Logger, runDir: opts.RunDir}
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
	tdev, err := tun.CreateTUN(t.name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", t.name, err)
	}

	var servers []ServerConfig
	for i, hp := range cfg.Interface.Rendezvous {
		servers = append(servers, ServerConfig{HostPort: hp, Key: cfg.Interface.RendezvousKey[i]})
	}
	var peers []PeerConfig
	for _, p := range cfg.Peers {
		if p.Endpoint == "" {
			peers = append(peers, PeerConfig{Name: p.Name, Key: p.PublicKey})
		}
	}
	t.ctl = newControl(t.log, cfg.Interface.PrivateKey, t.name, cfg.Interface.Addresses, servers, peers)
	t.ctl.statePath, t.ctl.saved = t.statePath, saved
	t.ctl.ifaceMTU = mtu
	t.bind = NewBind(cfg.Interface.PrivateKey.Public(), t.ctl.deliver)
	for _, p := range peers {
		t.bind.PeerEndpoint(p.Key)
	}
	t.dev = device.NewDevice(tdev, t.bind, deviceLogger(t.log))
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
	if err := configureInterface(t.name, mtu, cfg.Interface.Addresses, t.routes()); err != nil {
		return nil, err
	}
	if err := t.serveUAPI(); err != nil {
		return nil, err
	}
	if err := t.serveStatus(); err != nil {
		return nil, err
	}
	t.ctl.start(t.bind, t)
	t.closers = append(t.closers, t.ctl.stop)
	memDone := make(chan struct{})
	go t.bind.releaseMemory(memDone)
	t.closers = append(t.closers, func() { close(memDone) })
	t.log.Info("interface up", "interface", t.name, "public_key", cfg.Interface.PrivateKey.Public(),
		"listen_port", t.ListenPort(), "addresses", cfg.Interface.Addresses, "mtu", mtu)
	return t, nil
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
	for _, p := range t.cfg.Peers {
		if p.PublicKey == peer {
			return setRouteMTU(t.name, p.AllowedIPs, mtu)
		}
	}
	return nil
}

func (t *Tunnel) handshakeIfNone(peer key.Key) {
	if wg, err := t.wireGuardPeers(); err != nil || !wg[peer].handshake.IsZero() {
		return
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
	if ic.FwMark != 0 {
		fmt.Fprintf(&b, "fwmark=%d\n", ic.FwMark)
	}
	b.WriteString("replace_peers=true\n")
	for _, p := range t.cfg.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if !p.PresharedKey.IsZero() {
			fmt.Fprintf(&b, "preshared_key=%s\n", hex.EncodeToString(p.PresharedKey[:]))
		}
		if p.Endpoint != "" {
			ep, err := nat.Resolve(context.Background(), p.Endpoint)
			if err != nil {
				return "", fmt.Errorf("peer %s: endpoint %s: %w", peerLabel(p), p.Endpoint, err)
			}
			fmt.Fprintf(&b, "endpoint=%s\n", ep)
		} else {
			fmt.Fprintf(&b, "endpoint=%s%s\n", endpointPrefix, p.PublicKey)
		}
		if p.PersistentKeepalive != 0 {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", p.PersistentKeepalive)
		}
		b.WriteString("replace_allowed_ips=true\n")
		for _, ip := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", ip)
		}
	}
	return b.String(), nil
}

// routes are the peers' AllowedIPs that the interface's own prefixes do not
// already route. A default route is left out: sending everything into the
// tunnel needs policy routing (wg-quick's fwmark rules), which punchtun does
// not do yet, and a plain default route would swallow the tunnel's own
// packets to the rendezvous and the peers.
func (t *Tunnel) routes() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range t.cfg.Peers {
	next:
		for _, ip := range p.AllowedIPs {
			if ip.Bits() == 0 {
				t.log.Warn("not routing a default route into the tunnel: full-tunnel mode is not supported", "peer", peerLabel(p), "allowed_ip", ip)
				continue
			}
			for _, a := range t.cfg.Interface.Addresses {
				if a.Masked().Contains(ip.Addr()) && a.Bits() <= ip.Bits() {
					continue next
				}
			}
			out = append(out, ip)
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
