//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestUserspaceMeetsTUN: a rootless punchtun (userspace mode, run as
// nobody with no capabilities) behind NAT A and a TUN punchtun behind NAT B
// reach each other both ways: ssh from the rootless side through
// `punchtun nc` (ProxyCommand) to the TUN side's sshd, ssh and ping from
// the TUN side to the rootless side's virtual address, which forwards to
// an sshd on its host's loopback.
func TestUserspaceMeetsTUN(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptus", "easy", "easy")
	rvKey := l.startRendezvous()
	a := newPeer(t, "a1", "ptusa", "100.64.7.1") // rootless
	b := newPeer(t, "b1", "ptusb", "100.64.7.2") // TUN
	l.up(b, a, rvKey)

	// nobody's own directory: the binary, config, keys and run directory.
	home, err := os.MkdirTemp("", "punchtun-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	bin := filepath.Join(home, "punchtun")
	copyFile(t, l.bin, bin, 0o755)
	conf := filepath.Join(home, a.iface+".conf")
	copyFile(t, l.writeConfig(a, b, rvKey), conf, 0o600)
	hostKey, userKey := filepath.Join(home, "host_key"), filepath.Join(home, "user_key")
	for _, k := range []string{hostKey, userKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	authorized := filepath.Join(home, "authorized_keys")
	pub, _ := os.ReadFile(userKey + ".pub")
	os.WriteFile(authorized, pub, 0o644)
	if out, err := exec.Command("chown", "-R", "nobody:nogroup", home).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	runDir := filepath.Join(home, "run")
	asNobody := []string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "env", "HOME=" + home}
	rootless := l.start(a.host, a.iface, append(asNobody, bin, "up", "--userspace", conf, "--run-dir", runDir, "--socks5", "off",
		"--forward", "tcp:22=127.0.0.1:2222")...)
	status := func() (string, error) {
		out, err := l.cmd(a.host, bin, "status", "--run-dir", runDir, a.iface).CombinedOutput()
		return string(out), err
	}
	eventually(t, 20*time.Second, "the rootless side reaches the TUN side directly", func() error {
		out, err := status()
		if err != nil || !strings.Contains(out, "mode userspace") || !strings.Contains(out, " direct ") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	// The process started here, not any punchtun: other tests' peers share
	// the process table. ip netns exec, setpriv and env each exec the
	// next, so its pid is punchtun's.
	if out, _ := exec.Command("ps", "-o", "user=,comm=", "-p", strconv.Itoa(rootless.cmd.Process.Pid)).Output(); strings.Join(strings.Fields(string(out)), " ") != "nobody punchtun" {
		t.Fatalf("the rootless side does not run as nobody: ps says %q", out)
	}

	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		skipLab(t, "needs openssh-server")
	}
	os.MkdirAll("/run/sshd", 0o755)
	sshdArgs := func(listen string) []string {
		return []string{sshd, "-D", "-e", "-f", "/dev/null", "-o", "ListenAddress=" + listen, "-o", "HostKey=" + hostKey,
			"-o", "AuthorizedKeysFile=" + authorized, "-o", "PidFile=none", "-o", "StrictModes=no", "-o", "UsePAM=no",
			"-o", "PermitRootLogin=prohibit-password"}
	}
	l.start(b.host, "sshd-tun", sshdArgs(b.addr)...)
	l.start(a.host, "sshd-forward", sshdArgs("127.0.0.1:2222")...)
	sshOpts := []string{"ssh", "-F", "/dev/null", "-i", userKey, "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"}

	// Rootless → TUN: ssh as nobody, through punchtun nc (ssh is a heavy
	// step: its key exchanges, through a userspace stack, load the machine).
	heavy(t, func() {
		eventually(t, 20*time.Second, "ssh from the rootless side with ProxyCommand", func() error {
			args := append(append(asNobody, sshOpts...), "-o", fmt.Sprintf("ProxyCommand=%s nc --run-dir %s %%h %%p", bin, runDir),
				"root@"+b.addr, "echo", "over-punchtun-nc")
			out, err := l.cmd(a.host, args...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "over-punchtun-nc") {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
	})
	// TUN → rootless: ping its virtual address, ssh to its forward.
	l.run(b.host, "ping", "-c", "1", "-W", "2", a.addr)
	heavy(t, func() {
		eventually(t, 20*time.Second, "ssh from the TUN side to the rootless side's forward", func() error {
			out, err := l.cmd(b.host, append(sshOpts, "root@"+a.addr, "echo", "over-the-forward")...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "over-the-forward") {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
	})
	// 8 MiB each way over that ssh, the kernel's TCP at one end and
	// gVisor's at the other: the userspace side sends segments cut from
	// 64 KiB superpackets. The kernel drops one with a bad checksum, and
	// counts it (a retransmission would hide it from the transfer); ssh's
	// MAC catches data changed on the way.
	ssh := strings.Join(append(sshOpts, "root@"+a.addr), " ")
	before := checksumErrors(l, b.host)
	for _, script := range []string{
		"head -c 8388608 /dev/zero | " + ssh + " wc -c", // TUN -> userspace
		ssh + " head -c 8388608 /dev/zero | wc -c",      // userspace -> TUN
	} {
		if got := strings.TrimSpace(l.run(b.host, "timeout", "60", "sh", "-c", script)); got != "8388608" {
			t.Errorf("%s: %q bytes arrived, want 8388608", script, got)
		}
	}
	if n := checksumErrors(l, b.host) - before; n != 0 {
		t.Errorf("the TUN side's kernel dropped %d packets with bad IPv4 or TCP checksums", n)
	}
}

// checksumErrors is what host's kernel counted as InCsumErrors for IPv4
// headers and TCP (/proc/net/snmp and netstat: lines of names, then of
// values).
func checksumErrors(l *lab, host string) int64 {
	var n int64
	lines := strings.Split(l.run(host, "cat", "/proc/net/snmp", "/proc/net/netstat"), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || len(names) != len(values) || names[0] != "Tcp:" && names[0] != "IpExt:" {
			continue
		}
		for j, name := range names {
			if name == "InCsumErrors" {
				v, _ := strconv.ParseInt(values[j], 10, 64)
				n += v
			}
		}
	}
	return n
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
