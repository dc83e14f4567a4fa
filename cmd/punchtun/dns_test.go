//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// TestDNS: DNS = resolvers and search domains reach resolvconf while the
// tunnel is up and leave with it, as wg-quick's do. The real resolvconf
// (openresolv) runs in a private mount namespace — /run a fresh tmpfs,
// its config pointing resolv.conf at a file of the test's — so the host's
// resolver files are untouched. Without resolvconf, up fails saying so and
// leaves nothing.
func TestDNS(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("resolvconf"); err != nil {
		skipLab(t, "TestDNS needs resolvconf: install openresolv, as .ci/run does")
	}
	l := newLab(t, "ptdn", "easy", "easy")
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	peer, _ := key.NewPrivate()
	p := newPeer(t, "a1", "ptdn0", "100.64.0.1")
	conf := filepath.Join(l.dir, "ptdn0.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 100.64.0.1/24\nDNS = 100.64.0.53, 2001:db8::53, punch, corp.example\n"+
		"[Peer]\nPublicKey = %s\nAllowedIPs = 100.64.0.0/24\nEndpoint = 203.0.113.20:51820\n", p.priv.Encode(), peer.Public())), 0o600)
	resolv := filepath.Join(l.dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 192.0.2.1\n"), 0o644)
	orConf := filepath.Join(l.dir, "resolvconf.conf")
	os.WriteFile(orConf, []byte("resolv_conf="+resolv+"\n"), 0o644)
	script := fmt.Sprintf("mount -t tmpfs tmpfs /run && mount --bind %s /etc/resolvconf.conf && exec %s up --run-dir %s --state-dir - %s",
		orConf, l.bin, filepath.Join(l.dir, "run-ptdn0"), conf)
	pr := l.start("a1", "ptdn0", "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	eventually(t, 10*time.Second, "ptdn0 up", func() error {
		_, err := l.status(p)
		return err
	})
	got, _ := os.ReadFile(resolv)
	for _, want := range []string{"nameserver 100.64.0.53\n", "nameserver 2001:db8::53\n", "search punch corp.example\n"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("resolv.conf while up:\n%s\nlacks %q", got, want)
		}
	}
	if err := pr.stop(); err != nil {
		t.Fatalf("down: %v", err)
	}
	got, _ = os.ReadFile(resolv)
	if strings.Contains(string(got), "100.64.0.53") {
		t.Errorf("resolv.conf after down still has the tunnel's resolver:\n%s", got)
	}
	if now, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(now, hostResolv) {
		t.Errorf("the host's /etc/resolv.conf changed:\n%s", now)
	}

	// No resolvconf: a clear error, and nothing left.
	out, err := l.cmd("a1", "env", "PATH=/nonexistent", l.bin, "up", "--run-dir", filepath.Join(l.dir, "run-ptdn0"), "--state-dir", "-", conf).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "DNS is set but resolvconf is not installed") {
		t.Errorf("up without resolvconf: %v: %s", err, out)
	}
	if l.cmd("a1", "ip", "link", "show", "ptdn0").Run() == nil {
		t.Error("the interface is left after up failed on DNS")
	}
}
