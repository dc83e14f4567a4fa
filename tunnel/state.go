package tunnel

import (
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/rendezvous/wire/statefile"
)

// DefaultStateDir keeps what a tunnel remembers across restarts.
const DefaultStateDir = "/var/lib/punchtun"

// stateMaxAge is how old a remembered endpoint may be and still be tried:
// home routers keep their public address for days, mobile ones for hours.
const stateMaxAge = 7 * 24 * time.Hour

// savedState is what a tunnel remembers across restarts, in
// StateDir/IFACE.json: the port it listened on and each peer's last
// confirmed endpoint. A peer that restarts while the rendezvous is down
// binds the same port again — so its NAT likely maps it as before and the
// other peer's NAT still lets it in — and probes the endpoints it knows:
// the tunnel comes back without the rendezvous.
type savedState struct {
	ListenPort uint16               `json:"listen_port"`
	Peers      map[string]savedPeer `json:"peers"` // by base64 public key
}

type savedPeer struct {
	Endpoint  netip.AddrPort `json:"endpoint"`
	Confirmed time.Time      `json:"confirmed"`
}

func statePath(dir, iface string) string { return filepath.Join(dir, iface+".json") }

// loadState reads the state file; a missing one is an empty state.
func loadState(path string) (savedState, error) {
	st := savedState{Peers: map[string]savedPeer{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return savedState{Peers: map[string]savedPeer{}}, err
	}
	if st.Peers == nil {
		st.Peers = map[string]savedPeer{}
	}
	return st, nil
}

// save writes the state atomically (a crash leaves the old file or the
// new one), readable by root only: endpoints say where peers are.
func (st savedState) save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return statefile.Write(path, b)
}

// endpoint returns peer's remembered endpoint, if recent enough.
func (st savedState) endpoint(peer key.Key, now time.Time) (netip.AddrPort, bool) {
	sp, ok := st.Peers[peer.String()]
	if !ok || !sp.Endpoint.IsValid() || now.Sub(sp.Confirmed) > stateMaxAge {
		return netip.AddrPort{}, false
	}
	return sp.Endpoint, true
}

// portFree reports whether UDP port is free on both IPv4 and IPv6, as
// WireGuard's socket needs it.
func portFree(port uint16) bool {
	c4, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
	if err != nil {
		return false
	}
	defer c4.Close()
	c6, err := net.ListenUDP("udp6", &net.UDPAddr{Port: int(port)})
	if err != nil {
		return !ipv6Available()
	}
	c6.Close()
	return true
}

// ipv6Available reports whether this host can open IPv6 sockets at all.
func ipv6Available() bool {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// warnUnwritable warns at start when the state file's directory cannot
// be written (a read-only mount, a unit without its StateDirectory): the
// run would work, but a restart while the rendezvous is down could not
// find its peers, and nothing else would say so until then.
func warnUnwritable(log *slog.Logger, path string) {
	dir := filepath.Dir(path)
	err := os.MkdirAll(dir, 0o700)
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(dir, ".write-test.*"); err == nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	if err != nil {
		log.Warn("state directory is not writable: after a restart while the rendezvous is down, peers will not be found at their last endpoints (--state-dir; under systemd, StateDirectory=)", "dir", dir, "err", err)
	}
}
