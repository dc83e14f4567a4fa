package userspace_test

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// punchtun nc, the way ssh uses it as its ProxyCommand, into a forward.

func TestRootlessNc(t *testing.T) {
	h := newHarness(t)
	alicePriv, alicePub := h.genkey()
	bobPriv, bobPub := h.genkey()
	echo := echoServer(t)
	sshdPort, sshd := startSSHD(t, h.dir)
	alice := h.up("alice", h.peerConfig(alicePriv, "Address = 100.64.0.1/24\nDomain = punch\n"+
		"[Peer]\nName = bob\nPublicKey = "+bobPub+"\nAllowedIPs = 100.64.0.2/32\n"))
	fwd := fmt.Sprintf("Forward = tcp:7=127.0.0.1:%d\n", echo)
	if sshd != nil {
		fwd += fmt.Sprintf("Forward = tcp:22=127.0.0.1:%d\n", sshdPort)
	}
	h.up("bob", h.peerConfig(bobPriv, "Address = 100.64.0.2/24\n"+fwd+
		"[Peer]\nName = alice\nPublicKey = "+alicePub+"\nAllowedIPs = 100.64.0.1/32\n"))
	alice.waitPath("bob", direct, 20*time.Second)

	// The data equivalent of ssh: bytes through nc to the echo and back.
	data := strings.Repeat("through punchtun nc\n", 50000)
	out, errOut, err := h.punchtun(data, "nc", "--run-dir", alice.runDir, "bob.punch", "7")
	if err != nil || out != data {
		t.Fatalf("nc to bob's echo: %v, %d bytes back of %d: %s", err, len(out), len(data), errOut)
	}
	// Without --interface, the one userspace interface running is found.
	if out, errOut, err := h.punchtun("hello", "nc", "--run-dir", alice.runDir, "100.64.0.2", "7"); err != nil || out != "hello" {
		t.Errorf("nc without --interface: %q, %v: %s", out, err, errOut)
	}
	// None running: a clear error.
	if _, errOut, err := h.punchtun("", "nc", "--run-dir", filepath.Join(h.dir, "empty"), "bob.punch", "7"); err == nil || !strings.Contains(errOut, "no userspace punchtun interface is running") {
		t.Errorf("nc without a userspace interface: %v, %q", err, errOut)
	}
	// A port nothing listens on: refused, said.
	if _, errOut, err := h.punchtun("", "nc", "--run-dir", alice.runDir, "bob.punch", "9"); err == nil || errOut == "" {
		t.Errorf("nc to a closed port: %v, %q", err, errOut)
	}

	if sshd == nil {
		t.Log("no sshd here: ssh through nc checked by its data equivalent only")
		return
	}
	me, _ := user.Current()
	ssh := exec.Command("ssh", "-F", "/dev/null", "-i", filepath.Join(h.dir, "userkey"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "ConnectTimeout=20",
		"-o", fmt.Sprintf("ProxyCommand=%s nc --run-dir %s %%h %%p", h.bin, alice.runDir), "-l", me.Username, "bob.punch", "echo", "over-ssh")
	sshOut, sshErr := ssh.CombinedOutput()
	// A user whose account is locked (nobody) gets as far as sshd's
	// verdict on it: the key exchange and the authentication ran through
	// the tunnel, which is what this checks.
	eventually(t, 10*time.Second, "ssh through punchtun nc reaches sshd's verdict", func() error {
		log, _ := os.ReadFile(sshd.log)
		switch {
		case strings.Contains(string(sshOut), "over-ssh"):
			return nil
		case strings.Contains(string(log), "Accepted publickey for "+me.Username):
			return nil
		case strings.Contains(string(log), "User "+me.Username+" not allowed because account is locked") && strings.Contains(string(sshOut), "Permission denied (publickey)"):
			t.Logf("ssh as %s: sshd refuses the locked account, after the key exchange through the tunnel", me.Username)
			return nil
		}
		return fmt.Errorf("ssh: %v: %s", sshErr, sshOut)
	})
}

// startSSHD runs an sshd of the test's own on loopback, as whichever
// user runs the test (it then lets in that user only), with a key pair
// in dir; nil where there is no sshd or ssh.
func startSSHD(t *testing.T, dir string) (int, *sshdProc) {
	sshdPath := "/usr/sbin/sshd"
	if _, err := os.Stat(sshdPath); err != nil {
		return 0, nil
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		return 0, nil
	}
	for _, k := range []string{"hostkey", "userkey"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "userkey.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	port := freePort(t, "tcp")
	conf := filepath.Join(dir, "sshd_config")
	os.WriteFile(conf, []byte(fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nPidFile none\nAuthorizedKeysFile %s\n"+
		"StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel INFO\n",
		port, filepath.Join(dir, "hostkey"), filepath.Join(dir, "authorized_keys"))), 0o600)
	p := &sshdProc{log: filepath.Join(dir, "sshd.log")}
	cmd := exec.Command(sshdPath, "-D", "-f", conf, "-E", p.log)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("--- sshd's log:\n%s", b)
		}
	})
	return port, p
}

type sshdProc struct{ log string }
