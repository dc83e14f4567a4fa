package tunnel

import (
	"bufio"
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/bind"
	"github.com/punchtun/punchtun/tunnel/config"
	"github.com/punchtun/punchtun/tunnel/osnet"
)

// The WireGuard device: its configuration in WireGuard's own protocol
// (UAPI) from the config, its counters read back for status, its control
// socket for `wg`, and what the control plane asks of it and of the host
// (the wireGuard and host adapters).

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
	uapiKey(b, p.PublicKey)
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
		fmt.Fprintf(b, "endpoint=%s%s\n", bind.EndpointPrefix, p.PublicKey)
	}
	fmt.Fprintf(b, "persistent_keepalive_interval=%d\n", p.PersistentKeepalive)
	b.WriteString("replace_allowed_ips=true\n")
	for _, ip := range p.AllowedIPs {
		fmt.Fprintf(b, "allowed_ip=%s\n", ip)
	}
	return nil
}

// uapiKey opens a peer's section in WireGuard's configuration protocol:
// the lines after it, up to the next public_key, are that peer's.
func uapiKey(b *strings.Builder, k key.Key) {
	fmt.Fprintf(b, "public_key=%s\n", hex.EncodeToString(k[:]))
}

// uapiRemove takes a peer out of WireGuard, its session with it.
func uapiRemove(b *strings.Builder, k key.Key) {
	uapiKey(b, k)
	b.WriteString("remove=true\n")
}

// hostIfaceConfig is what the host's side of the interface gets of cfg.
func (t *Tunnel) hostIfaceConfig(cfg *config.Config) osnet.Config {
	return osnet.Config{MTU: cmp.Or(cfg.Interface.MTU, config.DefaultMTU), Addresses: cfg.Interface.Addresses, Routes: t.routes(cfg)}
}

// routes are the peers' AllowedIPs that the interface's own prefixes do not
// already route. With Table = auto, a default route (0.0.0.0/0, ::/0) is
// left to the full tunnel's policy routing (Interface.FullTunnel): a plain
// default route would swallow the tunnel's own packets.
func (t *Tunnel) routes(cfg *config.Config) []netip.Prefix {
	var out []netip.Prefix
	// The network's prefixes go to the interface, whether its addresses
	// route them or not: a member's packets are held there until it is
	// found.
	allowed := [][]netip.Prefix{cfg.Interface.NetworkPrefixes()}
	for _, p := range cfg.Peers {
		allowed = append(allowed, p.AllowedIPs)
	}
	for _, ips := range allowed {
	next:
		for _, ip := range ips {
			if ip.Bits() == 0 && t.table == osnet.TableMain {
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

type wgPeer struct {
	endpoint  netip.AddrPort
	handshake time.Time
	rx, tx    uint64
}

// wireGuardPeers reads per-peer counters through WireGuard's own
// configuration protocol, the same view `wg show` has.
func (t *Tunnel) wireGuardPeers() (map[key.Key]wgPeer, error) {
	text, err := t.dev.IpcGet()
	if err != nil {
		return nil, err
	}
	peers := make(map[key.Key]wgPeer)
	var cur key.Key
	var p wgPeer
	var sec, nsec int64
	flush := func() {
		if !cur.IsZero() {
			if sec != 0 || nsec != 0 {
				p.handshake = time.Unix(sec, nsec)
			}
			peers[cur] = p
		}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			flush()
			cur, p, sec, nsec = key.Key{}, wgPeer{}, 0, 0
			if b, err := hex.DecodeString(v); err == nil && len(b) == key.Len {
				cur = key.Key(b)
			}
		case "endpoint":
			p.endpoint, _ = netip.ParseAddrPort(v)
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			p.rx, _ = strconv.ParseUint(v, 10, 64)
		case "tx_bytes":
			p.tx, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	flush()
	return peers, nil
}

// serveUAPI opens WireGuard's own control socket, so `wg show` and
// `wg set` work on the interface as they do with wireguard-go: a unix
// socket, or on Windows a named pipe (uapi_unix.go, uapi_windows.go).
func (t *Tunnel) serveUAPI() error {
	l, err := uapiListen(t.name)
	if err != nil {
		return err
	}
	conns := newConnSet()
	t.closers = append(t.closers, func() { l.Close(); conns.closeAll() })
	t.spawn(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			// A `wg` client may hold its connection: closing it at down
			// ends IpcHandle.
			if conns.add(c) {
				t.spawn(func() { defer conns.remove(c); t.dev.IpcHandle(c) })
			}
		}
	})
	return nil
}

// wireGuard is the WireGuard device as the control plane sees it
// (control.WireGuard).
type wireGuard struct{ t *Tunnel }

// Repoint makes WireGuard send to peer's PeerEndpoint again: its roaming
// may have followed a packet from an address the control plane did not
// know yet, and a route change must take effect.
func (w wireGuard) Repoint(peer key.Key) error {
	var b strings.Builder
	uapiKey(&b, peer)
	fmt.Fprintf(&b, "update_only=true\nendpoint=%s%s\n", bind.EndpointPrefix, peer)
	return w.t.dev.IpcSet(b.String())
}

func (w wireGuard) SetPeerMTU(peer key.Key, mtu int) error {
	for _, p := range w.t.config().Peers {
		if p.PublicKey == peer {
			return w.t.hostIface.SetRouteMTU(p.AllowedIPs, mtu)
		}
	}
	return nil
}

// AddMember adds a network's member, found on demand, as a peer found
// through the rendezvous; for a member already there it replaces the
// AllowedIPs only, so the session stays.
func (w wireGuard) AddMember(peer key.Key, allowed []netip.Prefix) error {
	if w.t.user != nil {
		w.t.user.routeMember(peer, slices.Clone(allowed))
	}
	var b strings.Builder
	uapiKey(&b, peer)
	fmt.Fprintf(&b, "endpoint=%s%s\nreplace_allowed_ips=true\n", bind.EndpointPrefix, peer)
	for _, ip := range allowed {
		fmt.Fprintf(&b, "allowed_ip=%s\n", ip)
	}
	return w.t.dev.IpcSet(b.String())
}

func (w wireGuard) RemoveMember(peer key.Key) error {
	if w.t.user != nil {
		w.t.user.routeMember(peer, nil)
	}
	var b strings.Builder
	uapiRemove(&b, peer)
	return w.t.dev.IpcSet(b.String())
}

func (w wireGuard) HandshakeIfNone(peer key.Key) {
	t := w.t
	// The whole UAPI dump, not LookupPeer: wireguard-go's Peer keeps its
	// last handshake time unexported, and only IpcGet tells it.
	if wg, err := t.wireGuardPeers(); err != nil || !wg[peer].handshake.IsZero() {
		return
	}
	// With handshake messages under way this is rare, and WireGuard's own
	// retry (5 s) decides when the next initiation leaves: say what the
	// Bind saw, so that a slow start can be understood from a log at the
	// default level. (An idle peer simply has had no handshake yet.)
	if pe := t.bind.PeerEndpoint(peer); pe.Handshaking(time.Now()) {
		t.log.Info("no WireGuard session yet after the path changed", "peer", peer, "handshake", pe.HandshakeState(time.Now()))
	}
	w.Rehandshake(peer)
}

func (w wireGuard) Rehandshake(peer key.Key) {
	if p := w.t.dev.LookupPeer(device.NoisePublicKey(peer)); p != nil {
		p.SendHandshakeInitiation(false)
	}
}

// host is the host's network as the control plane sees it (control.Host).
type host struct {
	log   *slog.Logger
	iface string
}

func (h host) PathMTU(dst netip.Addr, mark uint32) int { return osnet.PathMTU(dst, mark) }

func (h host) WatchNetwork(done <-chan struct{}, changed chan<- struct{}) {
	osnet.WatchNetwork(h.log, h.iface, done, changed)
}
