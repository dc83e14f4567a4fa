//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// peersConfig is p's config with the given peers, all found through the
// rendezvous.
func peersConfig(p *peerSpec, rvKey key.Private, extra string, peers ...*peerSpec) string {
	conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = %s/24\nRendezvous = %s\nRendezvousKey = %s\n%s",
		p.priv.Encode(), p.addr, rendezvousAddr, rvKey.Public(), extra)
	for _, o := range peers {
		conf += fmt.Sprintf("\n[Peer]\nName = %s\nPublicKey = %s\nAllowedIPs = %s/32\n", o.host, o.priv.Public(), o.addr)
	}
	return conf
}

// peerPaths is the path per peer Name in p's status.
func (l *lab) peerPaths(p *peerSpec) (map[string]string, error) {
	st, err := l.status(p)
	if err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for _, ps := range st.Peers {
		paths[ps.Name] = ps.Path
	}
	return paths, nil
}

func (l *lab) syncconf(p *peerSpec, file string) ([]byte, error) {
	args := []string{l.bin, "syncconf", "--run-dir", filepath.Join(l.dir, "run-"+p.iface), p.iface}
	if file != "" {
		args = append(args, file)
	}
	return l.cmd(p.host, args...).CombinedOutput()
}

// TestReload: `punchtun syncconf` adds a peer and removes another while a
// third keeps pinging five times a second without losing a packet; the
// new peer is introduced and on a direct path within seconds; a file with
// an error, or a change a running interface cannot take, changes nothing
// and names the line; SIGHUP reloads the file `up` was given.
func TestReload(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptrd", "easy", "easy")
	rvKey := l.startRendezvous()
	a := newPeer(t, "a1", "ptrda", "100.64.0.1")
	b := newPeer(t, "b1", "ptrdb", "100.64.0.2")
	c := newPeer(t, "pub", "ptrdc", "100.64.0.3")
	d := newPeer(t, "a2", "ptrdd", "100.64.0.4")
	write := func(p *peerSpec, conf string) string {
		path := filepath.Join(l.dir, p.iface+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	aConf := write(a, peersConfig(a, rvKey, "", b, d))
	aProc := l.startPeer(a, aConf, "ptrda")
	l.startPeer(b, write(b, peersConfig(b, rvKey, "", a)), "ptrdb")
	l.startPeer(c, write(c, peersConfig(c, rvKey, "", a)), "ptrdc")
	l.startPeer(d, write(d, peersConfig(d, rvKey, "", a)), "ptrdd")
	eventually(t, 20*time.Second, "a's paths to b and d", func() error {
		paths, err := l.peerPaths(a)
		if err != nil {
			return err
		}
		if paths["b1"] != "direct" || paths["a2"] != "lan" {
			return fmt.Errorf("paths %v", paths)
		}
		return nil
	})
	pg := l.startPinger(a, b)

	// Add c, remove d.
	start := time.Now()
	write(a, peersConfig(a, rvKey, "", b, c))
	if out, err := l.syncconf(a, ""); err != nil {
		t.Fatalf("syncconf: %v: %s", err, out)
	}
	eventually(t, 10*time.Second, "a reaching the added peer", func() error {
		return l.cmd(a.host, "ping", "-c", "1", "-W", "1", c.addr).Run()
	})
	reached := time.Since(start)
	eventually(t, 10*time.Second, "a's peers after the reload", func() error {
		paths, err := l.peerPaths(a)
		if err != nil {
			return err
		}
		if len(paths) != 2 || paths["b1"] != "direct" || paths["pub"] != "direct" {
			return fmt.Errorf("paths %v, want b1 and pub direct, a2 gone", paths)
		}
		return nil
	})
	if err := l.cmd(d.host, "ping", "-c", "2", "-W", "1", a.addr).Run(); err == nil {
		t.Error("the removed peer still reaches a")
	}
	if sent, lost := pg.loss(start, time.Now()); lost > 0 || sent < 5 {
		t.Errorf("pings to the unchanged peer during the reload: %d of %d lost", lost, sent)
	}
	t.Logf("added peer answered %.2f s after syncconf", reached.Seconds())

	// A file with an error, given on the command line: exit 1 with
	// file:line: Key: message, nothing changed.
	bad := write(&peerSpec{iface: "bad"}, peersConfig(a, rvKey, "", b, c)+"AllowedIPs = 100.64.0.9/33\n")
	out, err := l.syncconf(a, bad)
	if err == nil || !strings.Contains(string(out), bad+":16: AllowedIPs: ") {
		t.Errorf("syncconf with a bad file: %v: %s; want exit 1 and %s:16: AllowedIPs: …", err, out, bad)
	}
	// A change that needs a restart: refused, naming the key and line.
	out, err = l.syncconf(a, write(&peerSpec{iface: "port"}, peersConfig(a, rvKey, "ListenPort = 4242\n", b, c)))
	if err == nil || !strings.Contains(string(out), ":6: ListenPort: cannot change while the interface runs") {
		t.Errorf("syncconf changing ListenPort: %v: %s", err, out)
	}
	if paths, err := l.peerPaths(a); err != nil || len(paths) != 2 {
		t.Errorf("after refused reloads: %v %v", paths, err)
	}

	// SIGHUP: up's own file again, with c renamed.
	write(a, strings.Replace(peersConfig(a, rvKey, "", b, c), "Name = pub", "Name = carol", 1))
	aProc.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "the renamed peer after SIGHUP", func() error {
		paths, err := l.peerPaths(a)
		if err != nil {
			return err
		}
		if paths["carol"] != "direct" {
			return fmt.Errorf("paths %v", paths)
		}
		return nil
	})
	if sent, lost := pg.loss(start, time.Now()); lost > 0 {
		t.Errorf("pings to the unchanged peer across the reloads: %d of %d lost", lost, sent)
	}
}
