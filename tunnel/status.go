package tunnel

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Status is what `punchtun status` shows of a running interface.
type Status struct {
	Interface  string             `json:"interface"`
	PublicKey  string             `json:"public_key"`
	ListenPort uint16             `json:"listen_port"`
	NAT        string             `json:"nat"` // our NAT's mapping: none, easy, hard, udp-blocked, unknown
	Rendezvous []RendezvousStatus `json:"rendezvous"`
	Peers      []PeerStatus       `json:"peers"`
	// IdlePacketsPerMinute is what the tunnel sends and receives while
	// idle: each direct path's heartbeat and its answer, each
	// registration refresh and its acknowledgement.
	IdlePacketsPerMinute float64 `json:"idle_packets_per_minute"`
	// RelayedBytes counts the WireGuard bytes relayed since start, by
	// relay: "rendezvous" (UDP), "rendezvous-tcp" and "turn".
	RelayedBytes map[string]ByteCounts `json:"relayed_bytes"`
	// TURN is our allocation on a TURN server, while there is one.
	TURN *TURNStatus `json:"turn,omitempty"`
}

// ByteCounts are bytes sent and received.
type ByteCounts struct {
	Tx uint64 `json:"tx"`
	Rx uint64 `json:"rx"`
}

// TURNStatus is our allocation on a TURN server.
type TURNStatus struct {
	Server  string `json:"server"`  // its URI, as the rendezvous handed it out
	Relayed string `json:"relayed"` // our relayed address, where peers send
}

// RendezvousStatus is one rendezvous as the peer sees it.
type RendezvousStatus struct {
	Address    string `json:"address"`
	Registered bool   `json:"registered"`
	Public     string `json:"public_endpoint"` // our endpoint as it sees us
}

// PeerStatus is one peer. Path is "direct", "lan", "relay" or
// "connecting"; a relayed peer's Endpoint is the relay's address (through
// a TURN server: the peer's relayed address there), Via names the relay
// (the rendezvous's address, or the TURN server's URI), and Reason says
// why it is relayed.
type PeerStatus struct {
	Name          string       `json:"name"`
	PublicKey     string       `json:"public_key"`
	Path          string       `json:"path"`
	Endpoint      string       `json:"endpoint"`
	RTTMillis     float64      `json:"rtt_ms"`
	LastHandshake string       `json:"last_handshake"` // RFC 3339, empty if none yet
	RxBytes       uint64       `json:"rx_bytes"`
	TxBytes       uint64       `json:"tx_bytes"`
	Reason        string       `json:"reason,omitempty"`
	Via           string       `json:"via,omitempty"`
	NAT           string       `json:"nat,omitempty"`     // the peer's NAT mapping, as it reported it
	History       []PathChange `json:"history,omitempty"` // path changes of the last hour
	Probing       bool         `json:"probing,omitempty"` // a punching round is under way
	// PathMTU is the path MTU of the route in use, once the kernel learned
	// it from ICMP (0: not known to be below what the links take); MTU is
	// then what the tunnel carries whole to the peer.
	PathMTU int `json:"path_mtu,omitempty"`
	MTU     int `json:"mtu,omitempty"`
	// KeepaliveSeconds is how often an idle direct path is probed, as
	// learned from the NATs on it (nat.HeartbeatInterval).
	KeepaliveSeconds float64 `json:"keepalive_s,omitempty"`
}

// Status reports the interface's state now.
func (t *Tunnel) Status() (*Status, error) {
	wg, err := t.wireGuardPeers()
	if err != nil {
		return nil, err
	}
	cfg := t.config()
	st := &Status{
		Interface:  t.name,
		PublicKey:  cfg.Interface.PrivateKey.Public().String(),
		ListenPort: t.ListenPort(),
		Rendezvous: []RendezvousStatus{},
		Peers:      []PeerStatus{},
	}
	v := t.ctl.view.Load()
	if v == nil {
		v = &controlView{}
	}
	st.TURN = v.turn
	st.RelayedBytes = make(map[string]ByteCounts, relayKinds)
	for k, name := range relayKindNames {
		st.RelayedBytes[name] = ByteCounts{Tx: t.bind.relayBytes[k][tx].Load(), Rx: t.bind.relayBytes[k][rx].Load()}
	}
	st.NAT = v.nat.String()
	for _, s := range v.servers {
		rs := RendezvousStatus{Address: s.hostport, Registered: s.registered}
		if s.registered {
			st.IdlePacketsPerMinute += 2 * float64(time.Minute) / float64(wire.RefreshInterval)
		}
		if s.observed.IsValid() {
			rs.Public = s.observed.String()
		}
		st.Rendezvous = append(st.Rendezvous, rs)
	}
	for _, p := range cfg.Peers {
		w := wg[p.PublicKey]
		ps := PeerStatus{
			Name:      p.Name,
			PublicKey: p.PublicKey.String(),
			Path:      nat.PathNone.String(),
			RxBytes:   w.rx,
			TxBytes:   w.tx,
		}
		if !w.handshake.IsZero() {
			ps.LastHandshake = w.handshake.UTC().Format(time.RFC3339)
		}
		if pv, ok := v.peers[p.PublicKey]; ok {
			ps.Path, ps.NAT, ps.History = pv.path, pv.nat.String(), pv.history
			ps.Probing, ps.PathMTU, ps.MTU = pv.probing, pv.pathMTU, pv.mtu
			if pv.route.IsValid() {
				ps.Endpoint = pv.route.String()
			}
			ps.Reason, ps.Via = pv.reason, pv.via
			if pv.heartbeat > 0 {
				ps.RTTMillis = float64(pv.rtt.Microseconds()) / 1000
				ps.KeepaliveSeconds = pv.heartbeat.Seconds()
				st.IdlePacketsPerMinute += 2 * float64(time.Minute) / float64(pv.heartbeat)
			}
		} else if w.endpoint.IsValid() && !w.handshake.IsZero() {
			// A peer with a fixed Endpoint: plain WireGuard, no probes, so no RTT.
			ps.Path, ps.Endpoint = nat.KindOf(w.endpoint).String(), w.endpoint.String()
		}
		st.Peers = append(st.Peers, ps)
	}
	return st, nil
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

// listenPrivate listens on a Unix socket at path that only root can
// connect to, with no moment in which anyone else could: its directory is
// made private (mode 0700: created so, or changed to it) before the socket
// exists, and the socket then gets mode 0600 as well. A directory others
// may write to (/tmp, say) is refused: it cannot be made private.
func listenPrivate(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 || fi.Mode()&os.ModeSticky != 0 {
		return nil, fmt.Errorf("run directory %s is writable by others: give punchtun a directory of its own", dir)
	} else if perm&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, err
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// StatusSocket is where the interface's status is served.
func StatusSocket(runDir, iface string) string {
	return filepath.Join(runDir, iface+".sock")
}

// serveStatus answers every connection on the status socket with the
// Status as JSON. The socket is root's alone (listenPrivate): status
// shows endpoints.
func (t *Tunnel) serveStatus() error {
	path := StatusSocket(t.runDir, t.name)
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("status socket %s is in use by another punchtun", path)
	}
	os.Remove(path) // a stale socket of a punchtun that was killed
	l, err := listenPrivate(path)
	if err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	conns := newConnSet()
	t.closers = append(t.closers, func() { l.Close(); conns.closeAll() }) // also removes the file
	t.spawn(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !conns.add(c) {
				continue
			}
			t.spawn(func() {
				defer conns.remove(c)
				if t.serveRequest(c) { // ping.go
					return
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				st, err := t.Status()
				if err != nil {
					json.NewEncoder(c).Encode(map[string]string{"error": err.Error()})
					return
				}
				json.NewEncoder(c).Encode(st)
			})
		}
	})
	return nil
}

// dialStatus connects to the status socket of the punchtun running iface.
func dialStatus(runDir, iface string) (net.Conn, error) {
	c, err := net.DialTimeout("unix", StatusSocket(runDir, iface), 5*time.Second)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no punchtun runs interface %s", iface)
	}
	return c, err
}

// QueryStatus asks the punchtun running iface for its status.
func QueryStatus(runDir, iface string) (*Status, error) {
	c, err := dialStatus(runDir, iface)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.(*net.UnixConn).CloseWrite() // no request: the status (ping.go)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var raw json.RawMessage
	if err := json.NewDecoder(c).Decode(&raw); err != nil {
		return nil, fmt.Errorf("read status of %s: %w", iface, err)
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return nil, fmt.Errorf("status of %s: %s", iface, e.Error)
	}
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("read status of %s: %w", iface, err)
	}
	return &st, nil
}

// Running lists the interfaces with a status socket in runDir.
func Running(runDir string) []string {
	matches, _ := filepath.Glob(filepath.Join(runDir, "*.sock"))
	var names []string
	for _, m := range matches {
		names = append(names, strings.TrimSuffix(filepath.Base(m), ".sock"))
	}
	return names
}
