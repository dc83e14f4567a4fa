package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/rendezvous/wire/statefile"
)

// stateMaxAge is how old a remembered endpoint may be and still be tried:
// home routers keep their public address for days, mobile ones for hours.
const stateMaxAge = 7 * 24 * time.Hour

// State is what a tunnel remembers across restarts, in
// StateDir/IFACE.json (StatePath): the port it listened on and each peer's last
// confirmed endpoint. A peer that restarts while the rendezvous is down
// binds the same port again — so its NAT likely maps it as before and the
// other peer's NAT still lets it in — and probes the endpoints it knows:
// the tunnel comes back without the rendezvous.
type State struct {
	ListenPort uint16               `json:"listen_port"`
	Peers      map[string]savedPeer `json:"peers"` // by base64 public key
}

type savedPeer struct {
	Endpoint  netip.AddrPort `json:"endpoint"`
	Confirmed time.Time      `json:"confirmed"`
}

// StatePath is where the interface iface keeps its State in dir.
func StatePath(dir, iface string) string { return filepath.Join(dir, iface+".json") }

// LoadState reads the state file; a missing one is an empty state.
func LoadState(path string) (State, error) {
	st := State{Peers: map[string]savedPeer{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return State{Peers: map[string]savedPeer{}}, err
	}
	if st.Peers == nil {
		st.Peers = map[string]savedPeer{}
	}
	return st, nil
}

// save writes the state atomically (a crash leaves the old file or the
// new one), readable by root only: endpoints say where peers are.
func (st State) save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return statefile.Write(path, b)
}

// endpoint returns peer's remembered endpoint, if recent enough.
func (st State) endpoint(peer key.Key, now time.Time) (netip.AddrPort, bool) {
	sp, ok := st.Peers[peer.String()]
	if !ok || !sp.Endpoint.IsValid() || now.Sub(sp.Confirmed) > stateMaxAge {
		return netip.AddrPort{}, false
	}
	return sp.Endpoint, true
}

// A member's network state — the documents it holds and the newest
// certificate seen of each member key — is kept beside the state file,
// so that a restart neither takes an older policy nor forgets a
// revocation or a newer certificate. A member that cannot keep
// it (no state directory, or a file that cannot be written) says so in
// status and once in its log, naming what it will forget.

// forgets is what a member that cannot keep its network state loses on
// restart.
const forgets = "on restart this member forgets the network's policy and revocations it holds and the newest certificate it has seen of each member, and takes older ones again until it hears of newer"

// kept is whether the network's state files could be written, and what
// status says when one could not.
type kept struct {
	log *slog.Logger
	// errs are the files that could not be written, by path ("": no
	// state directory); warning is what status shows of them.
	errs    map[string]error
	warning string
	// writes counts the writes tried, by path (tests count them).
	writes map[string]int
}

// write writes one of the network's state files atomically (path "":
// there is no state directory) and keeps the warning up to date.
func (k *kept) write(path string, b []byte) {
	var err error
	if path == "" {
		err = errors.New("no state directory (--state-dir -)")
	} else {
		err = statefile.Write(path, b)
	}
	if k.errs == nil {
		k.errs, k.writes = map[string]error{}, map[string]int{}
	}
	k.writes[path]++
	if err == nil {
		delete(k.errs, path)
	} else {
		k.errs[path] = err
	}
	k.warn()
}

// forget clears the warning: the interface left its network.
func (k *kept) forget() {
	clear(k.errs)
	k.warn()
}

// warn sets the warning from errs, logging when it appears or goes.
func (k *kept) warn() {
	was := k.warning
	k.warning = ""
	if paths := slices.Sorted(maps.Keys(k.errs)); len(paths) > 0 { // the first, so that it does not change at random
		if err := k.errs[paths[0]]; paths[0] == "" {
			k.warning = err.Error() + ": " + forgets
		} else {
			k.warning = "cannot keep " + paths[0] + ": " + err.Error() + ": " + forgets
		}
	}
	switch {
	case k.warning != "" && was == "":
		k.log.Warn("the network's state cannot be kept: " + k.warning)
	case k.warning == "" && was != "":
		k.log.Info("the network's state is kept again")
	}
}

// newestSaveEvery spaces the writes of the newest certificates seen: the
// first change is kept at once, a burst of them (a server meeting many
// members) once more at the end; shutdown keeps what is left.
const newestSaveEvery = 5 * time.Second

// see records c, a verified certificate of our network, as the newest of
// its key if it is; an *cert.Error of reason Superseded when a newer one
// of its key has been seen.
func (m *members) see(c *cert.Cert, now time.Time) error {
	prev := m.newest.Of(c.Member)
	if err := m.newest.See(c, now); err != nil {
		return err
	}
	if cur := m.newest.Of(c.Member); cur != nil && (prev == nil || !bytes.Equal(prev.Bytes(), cur.Bytes())) {
		m.newestDirty = true
		m.saveNewest(now)
	}
	return nil
}

// isNewest reports whether c is the newest certificate seen of its key.
func (m *members) isNewest(c *cert.Cert) bool {
	cur := m.newest.Of(c.Member)
	return cur != nil && bytes.Equal(cur.Bytes(), c.Bytes())
}

// loadNewest reads the newest certificates kept, verifying each again.
func (m *members) loadNewest(now time.Time) {
	if m.newestPath == "" {
		return
	}
	b, err := os.ReadFile(m.newestPath)
	if err == nil {
		err = m.newest.LoadText(string(b), now)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Warn("a newest certificate kept is refused", "path", m.newestPath, "err", err)
	}
}

// saveNewest keeps the newest certificates seen if they changed and the
// last write is newestSaveEvery old (tick retries).
func (m *members) saveNewest(now time.Time) {
	if m.newest == nil || !m.newestDirty || now.Sub(m.newestSaved) < newestSaveEvery {
		return
	}
	m.flushNewest(now)
}

// flushNewest keeps the newest certificates seen now, if they changed.
func (m *members) flushNewest(now time.Time) {
	if m.newest == nil || !m.newestDirty {
		return
	}
	m.newestDirty, m.newestSaved = false, now
	m.kept.write(m.newestPath, m.newest.AppendText(nil))
}

// prune forgets the newest certificates seen of keys whose every
// certificate expired by now.
func (m *members) prune(now time.Time) {
	if m.newest != nil && m.newest.Prune(now) {
		m.newestDirty = true
	}
}
