//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// TestHooksAndTable runs a wg-quick server config's keys as wg-quick
// would: PreUp, PostUp, PreDown and PostDown in order with %i replaced,
// PostDown after the interface is gone; Table puts the routes in another
// table, or none; a failing PostUp fails up and leaves nothing, without
// running the down hooks.
func TestHooksAndTable(t *testing.T) {
	t.Parallel()
	l := newLab(t, "pthk", "easy", "easy")
	peer, _ := key.NewPrivate()
	log := filepath.Join(l.dir, "hooks.log")
	config := func(iface, extra string) (*peerSpec, string) {
		p := newPeer(t, "a1", iface, "100.64.0.1")
		conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 100.64.0.1/24\n%s\n[Peer]\nPublicKey = %s\nAllowedIPs = 10.99.0.0/16\nEndpoint = 203.0.113.20:51820\n",
			p.priv.Encode(), extra, peer.Public())
		path := filepath.Join(l.dir, iface+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return p, path
	}
	hooks := fmt.Sprintf("PreUp = ip link show %%i >/dev/null 2>&1 || echo \"preup %%i\" >> %[1]s\n"+
		"PostUp = ip link show %%i >/dev/null && echo \"postup %%i\" >> %[1]s\n"+
		"PostUp = echo second >> %[1]s\n"+
		"PreDown = ip link show %%i >/dev/null && echo \"predown %%i\" >> %[1]s\n"+
		"PostDown = ip link show %%i >/dev/null 2>&1 || echo \"postdown %%i\" >> %[1]s\n", log)
	readLog := func() string { b, _ := os.ReadFile(log); return string(b) }

	p, conf := config("pthk0", hooks+"Table = 1234\nSaveConfig = false\n")
	pr := l.startPeer(p, conf, "pthk0")
	l.waitHooks(pr)
	if got, want := readLog(), "preup pthk0\npostup pthk0\nsecond\n"; got != want {
		t.Errorf("after up, the hooks wrote %q, want %q", got, want)
	}
	if out := l.run("a1", "ip", "route", "show", "table", "1234"); !strings.Contains(out, "10.99.0.0/16 dev pthk0") {
		t.Errorf("table 1234: %q, want the peer's AllowedIPs", out)
	}
	if out := l.run("a1", "ip", "route", "show", "table", "main"); strings.Contains(out, "10.99.0.0/16") {
		t.Errorf("main table has the peer's route with Table = 1234: %q", out)
	}
	if err := pr.stop(); err != nil {
		t.Fatalf("down: %v", err)
	}
	if got, want := readLog(), "preup pthk0\npostup pthk0\nsecond\npredown pthk0\npostdown pthk0\n"; got != want {
		t.Errorf("after down, the hooks wrote %q, want %q", got, want)
	}
	if out := l.run("a1", "ip", "route", "show", "table", "all"); strings.Contains(out, "10.99.0.0/16") {
		t.Errorf("a route is left after down: %q", out)
	}

	// Table = off: no route at all.
	os.Remove(log)
	p, conf = config("pthk1", "Table = off\n")
	pr = l.startPeer(p, conf, "pthk1")
	if out := l.run("a1", "ip", "route", "show", "table", "all"); strings.Contains(out, "10.99.0.0/16") {
		t.Errorf("Table = off, yet a route: %q", out)
	}
	pr.stop()

	// A failing PostUp: up fails, the interface is gone, no down hook ran.
	// (Its state directory cannot be written either: a warning.)
	os.Remove(log)
	_, conf = config("pthk2", hooks+"PostUp = exit 3\n")
	out, err := l.cmd("a1", l.bin, "up", "--run-dir", filepath.Join(l.dir, "run"), "--state-dir", "/proc/punchtun-state", conf).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `PostUp "exit 3": exit status 3`) {
		t.Errorf("up with a failing PostUp: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "state directory is not writable") {
		t.Errorf("an unwritable state directory was not warned about: %s", out)
	}
	if l.cmd("a1", "ip", "link", "show", "pthk2").Run() == nil {
		t.Error("the interface is left after a failed PostUp")
	}
	if got, want := readLog(), "preup pthk2\npostup pthk2\nsecond\n"; got != want {
		t.Errorf("a failed up ran hooks %q, want %q", got, want)
	}
}
