//go:build linux

package main

// `punchtun up` failure hygiene: whatever step fails, nothing is left
// behind and the error says what failed; an unreachable rendezvous is no
// failure; a config readable by others is warned about.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// hygieneConf is a config for iface with a fixed-endpoint peer routed
// beyond the interface's own prefix, so that up adds a route; extra goes
// into [Interface].
func hygieneConf(t *testing.T, dir, iface, extra string) string {
	t.Helper()
	priv, _ := key.NewPrivate()
	peer, _ := key.NewPrivate()
	conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 100.64.0.1/24\n%s\n[Peer]\nPublicKey = %s\nAllowedIPs = 100.64.0.2/32, 10.99.0.0/16\nEndpoint = 127.0.0.1:51820\n",
		priv.Encode(), extra, peer.Public())
	path := filepath.Join(dir, iface+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// upFails runs up in a namespace and wants it to exit 1 with stderr
// containing want; it returns stderr.
func upFails(t *testing.T, in func(args ...string) *exec.Cmd, want string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	c := in(append([]string{punchtunBinary(t), "up"}, args...)...)
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	// If up wrongly succeeds it runs until stopped: fail, do not hang.
	stop := time.AfterFunc(20*time.Second, func() { c.Process.Signal(syscall.SIGTERM) })
	err := c.Wait()
	stop.Stop()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), want) {
		t.Fatalf("exit %v, stderr %q: want exit 1 and %q", err, stderr.String(), want)
	}
	return stderr.String()
}

// leftBehind lists what a failed up for iface left in the namespace and
// in runDir.
func leftBehind(t *testing.T, in func(args ...string) *exec.Cmd, iface, runDir string) []string {
	t.Helper()
	var left []string
	if l := links(t, in); strings.Contains(l, iface) {
		left = append(left, "interface: "+l)
	}
	for _, family := range []string{"-4", "-6"} {
		out, _ := in("ip", family, "route", "show", "table", "all").Output()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, iface) || strings.Contains(line, "100.64.0.") || strings.Contains(line, "10.99.0.0") {
				left = append(left, "route: "+line)
			}
		}
	}
	if _, err := os.Stat("/var/run/wireguard/" + iface + ".sock"); err == nil {
		left = append(left, "WireGuard socket")
	}
	if ents, _ := os.ReadDir(runDir); len(ents) != 0 {
		for _, e := range ents {
			left = append(left, "file in run dir: "+e.Name())
		}
	}
	out, _ := in("ss", "-Hlun").Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		left = append(left, "UDP socket: "+s)
	}
	return left
}

// TestUpInterfaceTakenLeavesNothing: an interface of the name exists
// already; up says so, and neither takes it over nor deletes it.
func TestUpInterfaceTakenLeavesNothing(t *testing.T) {
	in := netns(t, "ptftaken")
	// A dummy interface, or where the kernel lacks the module, a veth.
	kind := "dummy"
	if err := in("ip", "link", "add", "ptftaken0", "type", "dummy").Run(); err != nil {
		kind = "veth"
		if out, err := in("ip", "link", "add", "ptftaken0", "type", "veth", "peer", "name", "ptftaken1").CombinedOutput(); err != nil {
			t.Fatalf("ip link add: %v %s", err, out)
		}
	}
	runDir := t.TempDir()
	path := hygieneConf(t, t.TempDir(), "ptftaken0", "")
	upFails(t, in, "interface ptftaken0 already exists", path, "--run-dir", runDir)
	out, err := in("ip", "-d", "link", "show", "ptftaken0").Output()
	if err != nil || !strings.Contains(string(out), kind) {
		t.Fatalf("the %s interface is gone or changed: %v %s", kind, err, out)
	}
	in("ip", "link", "del", "ptftaken0").Run()
	if left := leftBehind(t, in, "ptftaken0", runDir); len(left) != 0 {
		t.Errorf("left behind: %q", left)
	}
}

// TestUpBadAddressLeavesNothing fails up at the interface's address, after
// the TUN and the UDP socket exist: IPv6 is disabled in the namespace.
func TestUpBadAddressLeavesNothing(t *testing.T) {
	in := netns(t, "ptfaddr")
	if out, err := in("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v %s", err, out)
	}
	runDir := t.TempDir()
	path := hygieneConf(t, t.TempDir(), "ptfaddr0", "Address = fd00:99::1/64\n")
	upFails(t, in, "add address fd00:99::1/64 to ptfaddr0", path, "--run-dir", runDir)
	if left := leftBehind(t, in, "ptfaddr0", runDir); len(left) != 0 {
		t.Errorf("left behind: %q", left)
	}
}

// TestUpStatusSocketTakenLeavesNothing fails up at its very last step, the
// status socket, once the interface has its addresses and routes.
func TestUpStatusSocketTakenLeavesNothing(t *testing.T) {
	in := netns(t, "ptfsock")
	runDir := t.TempDir()
	sock := filepath.Join(runDir, "ptfsock0.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	path := hygieneConf(t, t.TempDir(), "ptfsock0", "")
	upFails(t, in, "status socket "+sock+" is in use", path, "--run-dir", runDir)
	l.Close() // removes the socket file: the run dir must now be empty
	if left := leftBehind(t, in, "ptfsock0", runDir); len(left) != 0 {
		t.Errorf("left behind: %q", left)
	}
}

// TestUpWithoutRendezvous: a rendezvous that cannot be resolved or reached
// does not fail up. The interface comes up, its peer with a fixed endpoint
// is configured, and it keeps trying the rendezvous in the background.
func TestUpWithoutRendezvous(t *testing.T) {
	in := netns(t, "ptfnorv")
	rv, _ := key.NewPrivate()
	runDir := t.TempDir()
	path := hygieneConf(t, t.TempDir(), "ptfnorv0", fmt.Sprintf("Rendezvous = rendezvous.invalid:3478\nRendezvous = 192.0.2.1:3478\nRendezvousKey = %s\nRendezvousKey = %s\n", rv.Public(), rv.Public()))
	var stderr bytes.Buffer
	c := in(punchtunBinary(t), "up", path, "--run-dir", runDir)
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = c.Wait(); close(done) }()
	defer func() {
		c.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.Process.Kill()
		}
	}()
	eventually(t, 10*time.Second, "up answers status", func() error {
		select {
		case <-done:
			t.Fatalf("up exited: %v\n%s", waitErr, stderr.String())
		default:
		}
		out, err := in(punchtunBinary(t), "status", "ptfnorv0", "--json", "--run-dir", runDir).Output()
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), `"registered": false`) {
			return fmt.Errorf("status %s", out)
		}
		return nil
	})
	if out, err := in("ip", "route", "show", "10.99.0.0/16").Output(); err != nil || !strings.Contains(string(out), "ptfnorv0") {
		t.Errorf("route to the fixed peer: %v %q", err, out)
	}
	c.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", waitErr, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("up did not exit on SIGTERM")
	}
	if left := leftBehind(t, in, "ptfnorv0", runDir); len(left) != 0 {
		t.Errorf("left behind: %q", left)
	}
}

// TestUpWarnsWorldAccessible: as wg-quick does, up warns about a config
// (it holds a private key) that others may read, and only then.
func TestUpWarnsWorldAccessible(t *testing.T) {
	dir := t.TempDir()
	// A config that fails to parse: the warning comes first, and nothing
	// needs root.
	path := filepath.Join(dir, "ptfwarn0.conf")
	priv, _ := key.NewPrivate()
	os.WriteFile(path, []byte(fmt.Sprintf("[Interface]\nPrivateKey = %s\nFrobnicate = 1\n", priv.Encode())), 0o600)
	warning := "Warning: `" + path + "' is world accessible"
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o604, true}, {0o644, true}} {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := punchtun(t, "", "up", path)
		if code != 1 || !strings.Contains(stderr, "Frobnicate") {
			t.Fatalf("mode %v: exit %d, stderr %q", tc.mode, code, stderr)
		}
		if got := strings.Contains(stderr, warning); got != tc.warn {
			t.Errorf("mode %v: warned %v, want %v; stderr %q", tc.mode, got, tc.warn, stderr)
		}
	}
}
