//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// punchtun runs the binary with stdin and returns stdout, stderr and the
// exit code.
func punchtun(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	c := exec.Command(punchtunBinary(t), args...)
	c.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"genkey", "pubkey", "rendezvous", "up", "status"} {
		out, errOut, code := punchtun(t, "", cmd, "--help")
		if code != 0 || !strings.Contains(out+errOut, "Usage: punchtun "+cmd) {
			t.Errorf("%s --help: exit %d, output %q", cmd, code, out+errOut)
		}
	}
	if _, _, code := punchtun(t, "", "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}

func TestGenkeyPubkey(t *testing.T) {
	priv, _, code := punchtun(t, "", "genkey")
	if code != 0 {
		t.Fatal("genkey failed")
	}
	k, err := key.ParsePrivate(strings.TrimSpace(priv))
	if err != nil {
		t.Fatalf("genkey printed %q: %v", priv, err)
	}
	pub, _, code := punchtun(t, priv, "pubkey")
	if code != 0 || strings.TrimSpace(pub) != k.Public().String() {
		t.Fatalf("pubkey printed %q, want %s", pub, k.Public())
	}
	// Interchangeable with wireguard-tools, both ways.
	requireTools(t, "wireguard-tools", "wg")
	c := exec.Command("wg", "pubkey")
	c.Stdin = strings.NewReader(priv)
	wgPub, err := c.Output()
	if err != nil || string(wgPub) != pub {
		t.Errorf("wg pubkey says %q, punchtun %q", wgPub, pub)
	}
	wgPriv, _ := exec.Command("wg", "genkey").Output()
	c = exec.Command("wg", "pubkey")
	c.Stdin = bytes.NewReader(wgPriv)
	wgPub, _ = c.Output()
	if pub, _, _ := punchtun(t, string(wgPriv), "pubkey"); pub != string(wgPub) {
		t.Errorf("for wg's key, punchtun pubkey says %q, wg %q", pub, wgPub)
	}
	if _, errOut, code := punchtun(t, "not a key\n", "pubkey"); code != 1 || errOut == "" {
		t.Errorf("bad key: exit %d, stderr %q", code, errOut)
	}
}

// TestRendezvousKeyFile checks that a missing key file is created with mode
// 0600 and that the logged public key belongs to it.
func TestRendezvousKeyFile(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "sub", "rendezvous.key")
	logFile := filepath.Join(dir, "log")
	lf, _ := os.Create(logFile)
	defer lf.Close()
	c := exec.Command(punchtunBinary(t), "rendezvous", "--listen", "127.0.0.1:0", "--key-file", keyFile)
	c.Stdout, c.Stderr = lf, lf
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { c.Process.Kill(); c.Wait() }()
	eventually(t, 10*time.Second, "rendezvous logs its key", func() error {
		b, _ := os.ReadFile(logFile)
		if !strings.Contains(string(b), "public_key=") {
			return fmt.Errorf("log: %q", b)
		}
		return nil
	})
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v mode %v", err, fi.Mode())
	}
	b, _ := os.ReadFile(keyFile)
	k, err := key.ParsePrivate(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	logged, _ := os.ReadFile(logFile)
	if !strings.Contains(string(logged), k.Public().String()) {
		t.Errorf("log does not show public key %s: %s", k.Public(), logged)
	}
}

// netns is a bare network namespace for tests that must see what `up`
// leaves behind.
func netns(t *testing.T, name string) func(args ...string) *exec.Cmd {
	t.Helper()
	claimName(t, "namespace", name)
	requireLab(t)
	exec.Command("ip", "netns", "del", name).Run()
	// A socket a killed earlier run left would be taken for one of ours.
	os.Remove("/var/run/wireguard/" + name + "0.sock")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	exec.Command("ip", "-n", name, "link", "set", "lo", "up").Run()
	return func(args ...string) *exec.Cmd {
		return exec.Command("ip", append([]string{"netns", "exec", name}, args...)...)
	}
}

// links lists the interfaces of a namespace.
func links(t *testing.T, in func(args ...string) *exec.Cmd) string {
	out, err := in("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestBadConfigCreatesNothing(t *testing.T) {
	in := netns(t, "ptcfg")
	priv, _ := key.NewPrivate()
	peer, _ := key.NewPrivate()
	other, _ := key.NewPrivate()
	good := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 100.64.0.1/24\n\n[Peer]\nPublicKey = %s\nAllowedIPs = 100.64.0.2/32\nEndpoint = 127.0.0.1:51820\n", priv.Encode(), peer.Public())
	for _, tc := range []struct {
		name, conf, want string
	}{
		{"unknown key", strings.Replace(good, "Address", "Adress", 1), ":3: Adress: "},
		{"unknown section", good + "[Peers]\n", ":9: "},
		{"bad key", strings.Replace(good, peer.Public().String(), "AAAA", 1), ":6: PublicKey: "},
		{"bad cidr", strings.Replace(good, "100.64.0.2/32", "100.64.0.2/33", 1), ":7: AllowedIPs: "},
		{"missing private key", strings.Replace(good, "PrivateKey = "+priv.Encode()+"\n", "", 1), ":1: PrivateKey: "},
		{"no endpoint, no rendezvous", strings.Replace(good, "Endpoint = 127.0.0.1:51820\n", "", 1), ":5: Endpoint: "},
		{"AllowedIPs of another peer", good + "\n[Peer]\nPublicKey = " + other.Public().String() + "\nAllowedIPs = 100.64.0.2/32\nEndpoint = 127.0.0.1:51821\n",
			":12: AllowedIPs: 100.64.0.2/32 is already routed to the [Peer] on line 5 (AllowedIPs on line 7)"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ptcfg0.conf")
			os.WriteFile(path, []byte(tc.conf), 0o600)
			var stderr bytes.Buffer
			c := in(punchtunBinary(t), "up", path)
			c.Stderr = &stderr
			err := c.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1; stderr %s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), path+tc.want) {
				t.Errorf("stderr %q does not name %q", stderr.String(), path+tc.want)
			}
			if l := links(t, in); strings.Contains(l, "ptcfg0") {
				t.Errorf("interface created: %s", l)
			}
			if _, err := os.Stat("/var/run/wireguard/ptcfg0.sock"); err == nil {
				t.Error("WireGuard socket left behind")
			}
		})
	}
}

// TestFailedUpLeavesNothing fails `up` late, at the UDP port, after the
// TUN exists, and checks that the interface and sockets are gone again.
func TestFailedUpLeavesNothing(t *testing.T) {
	in := netns(t, "ptport")
	// Hold the port with a UDP socket inside the namespace.
	blocker := in("nc", "-u", "-l", "-p", "45123")
	if err := blocker.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { blocker.Process.Kill(); blocker.Wait() }()
	eventually(t, 5*time.Second, "port held", func() error {
		out, _ := in("ss", "-Hlun", "sport = :45123").Output()
		if !strings.Contains(string(out), "45123") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	priv, _ := key.NewPrivate()
	peer, _ := key.NewPrivate()
	conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 100.64.0.1/24\nListenPort = 45123\n\n[Peer]\nPublicKey = %s\nAllowedIPs = 100.64.0.2/32\nEndpoint = 127.0.0.1:51820\n", priv.Encode(), peer.Public())
	path := filepath.Join(t.TempDir(), "ptport0.conf")
	os.WriteFile(path, []byte(conf), 0o600)
	var stderr bytes.Buffer
	runDir := t.TempDir()
	c := in(punchtunBinary(t), "up", path, "--run-dir", runDir)
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	// If up wrongly succeeds it runs until killed: fail, do not hang.
	kill := time.AfterFunc(20*time.Second, func() { c.Process.Signal(syscall.SIGTERM) })
	err := c.Wait()
	kill.Stop()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "45123") {
		t.Fatalf("exit %v, stderr %q: want exit 1 naming the port", err, stderr.String())
	}
	if l := links(t, in); strings.Contains(l, "ptport0") {
		t.Errorf("interface left behind: %s", l)
	}
	if _, err := os.Stat("/var/run/wireguard/ptport0.sock"); err == nil {
		t.Error("WireGuard socket left behind")
	}
	if ents, _ := os.ReadDir(runDir); len(ents) != 0 {
		t.Errorf("status socket left behind: %v", ents)
	}
}
