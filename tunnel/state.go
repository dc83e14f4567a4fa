package tunnel

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
)

// What Up checks of the state the control plane keeps across restarts
// (control.State): whether the last run's port is free to take again, and
// whether the state directory can be written at all.

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

// RunDir is where status sockets are: DefaultRunDir for root; for any
// other user a directory only they can enter, $XDG_RUNTIME_DIR/punchtun,
// else run/ in their state directory.
func RunDir() string {
	if os.Geteuid() == 0 {
		return DefaultRunDir
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return filepath.Join(d, "punchtun")
	}
	return filepath.Join(StateDir(), "run")
}

// StateDir is where state is kept across restarts: DefaultStateDir for
// root; for any other user $XDG_STATE_HOME/punchtun, else
// ~/.local/state/punchtun.
func StateDir() string {
	if os.Geteuid() == 0 {
		return DefaultStateDir
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "punchtun")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "punchtun")
	}
	return DefaultStateDir
}
