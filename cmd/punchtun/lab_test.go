//go:build linux

package main

// End-to-end tests: the punchtun binary, driven through its command-line
// contract, in the network-namespace lab of scripts/lab.sh (a public
// internet, a rendezvous host, NAT routers and hosts behind them). They need
// root; without it they skip and say why.

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel"
	"github.com/punchtun/punchtun/tunnel/testpoll"
)

const (
	rendezvousAddr  = "203.0.113.10:3478"
	rendezvousAddr2 = "203.0.113.11:3478"
)

// tools are the programs the tests build, once per run each, into one
// directory that TestMain removes.
var tools struct {
	sync.Mutex
	dir   string
	built map[string]error
}

// buildTool builds the main package pkg as name, once per test run, and
// returns its path.
func buildTool(t *testing.T, name, pkg string) string {
	t.Helper()
	tools.Lock()
	defer tools.Unlock()
	if tools.dir == "" {
		dir, err := os.MkdirTemp("", "punchtun-bin")
		if err != nil {
			t.Fatal(err)
		}
		tools.dir, tools.built = dir, map[string]error{}
	}
	path := filepath.Join(tools.dir, name)
	err, done := tools.built[name]
	if !done {
		// PUNCHTUN_BUILD_FLAGS=-race runs the lab with race-checked
		// binaries: a race makes a process exit 66, which the tests
		// that stop their peers catch.
		args := append([]string{"build"}, strings.Fields(os.Getenv("PUNCHTUN_BUILD_FLAGS"))...)
		if out, e := exec.Command("go", append(args, "-o", path, pkg)...).CombinedOutput(); e != nil {
			err = fmt.Errorf("go build %s: %v\n%s", pkg, e, out)
		}
		tools.built[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// punchtunBinary builds the binary once per test run.
func punchtunBinary(t *testing.T) string { return buildTool(t, "punchtun", ".") }

func TestMain(m *testing.M) {
	setParallel()
	code := m.Run()
	printSkipped(os.Stdout)
	if testing.Verbose() {
		printSlotTimes(os.Stdout)
	}
	if tools.dir != "" {
		os.RemoveAll(tools.dir)
	}
	if out := os.Getenv("PUNCHTUN_MATRIX_OUT"); out != "" {
		printMatrix(os.Stdout, out)
	}
	if out := os.Getenv("PUNCHTUN_GAPS_OUT"); out != "" {
		printGaps(os.Stdout, out)
	}
	os.Exit(code)
}

// lab is one instance of scripts/lab.sh.
type lab struct {
	t      *testing.T
	prefix string
	dir    string
	bin    string
	// logLevel is the peers' --log-level, if the test needs one; else
	// PUNCHTUN_LAB_LOG_LEVEL's (tests run in parallel: not t.Setenv).
	logLevel string
}

func requireLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipLab(t, "lab tests need root (network namespaces, TUN): run the tests as root, as CI does")
	}
	for _, tool := range []string{"ip", "nft", "ping", "nc"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipLab(t, "lab tests need "+tool+": install the packages .ci/run installs")
		}
	}
}

// skipLab skips a lab test on a machine that cannot run it, except under
// PUNCHTUN_REQUIRE_LAB=1 (set by CI), where a skipped lab would hide a
// broken test run and so fails instead.
func skipLab(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("PUNCHTUN_REQUIRE_LAB") == "1" {
		t.Fatal(why)
	}
	skipped.Lock()
	skipped.n++
	if !slices.Contains(skipped.why, why) {
		skipped.why = append(skipped.why, why)
	}
	skipped.Unlock()
	t.Skip(why)
}

// skipped counts the lab tests skipLab skipped, and why, for the summary
// TestMain prints: a plain `go test ./...` as a user says "ok" for a run
// in which most of the end-to-end tests did not run.
var skipped struct {
	sync.Mutex
	n   int
	why []string
}

// printSkipped tells how many lab tests were skipped, and why.
func printSkipped(w io.Writer) {
	skipped.Lock()
	defer skipped.Unlock()
	if skipped.n == 0 {
		return
	}
	fmt.Fprintf(w, "\n%d lab tests skipped: %s\nRun scripts/test.sh as root to run them all (it installs what they need).\n",
		skipped.n, strings.Join(skipped.why, "; "))
}

// newLab builds a lab of namespaces named prefix-HOST: prefix, like the
// interface names a test gives its peers, is that test's alone. It waits
// for one of labSlots.
func newLab(t *testing.T, prefix, natA, natB string, opts ...string) *lab {
	t.Helper()
	claimName(t, "lab prefix", prefix)
	requireLab(t)
	takeLabSlot(t)
	return buildLab(t, func(f func()) { f() }, prefix, natA, natB, opts...)
}

// idleLab is newLab for a test that spends minutes waiting (a freeze, an
// idle tunnel): it takes a slot only to build and to tear down its lab,
// so its waits run beside the other tests — with one slot, as
// scripts/test.sh runs the suite, beside the one test running, which its
// builds and teardowns never load.
func idleLab(t *testing.T, prefix, natA, natB string, opts ...string) *lab {
	t.Helper()
	claimName(t, "lab prefix", prefix)
	requireLab(t)
	return buildLab(t, func(f func()) { inLabSlot(t, f) }, prefix, natA, natB, opts...)
}

// buildLab brings up the lab and tears it down when t ends, each in
// around (for an idle lab, in a slot).
func buildLab(t *testing.T, around func(func()), prefix, natA, natB string, opts ...string) *lab {
	t.Helper()
	l := &lab{t: t, prefix: prefix, dir: t.TempDir(), bin: punchtunBinary(t)}
	script, _ := filepath.Abs("../../scripts/lab.sh")
	t.Cleanup(func() { around(func() { heavy(t, func() { exec.Command(script, "down", prefix).Run() }) }) })
	around(func() {
		heavy(t, func() {
			if out, err := exec.Command(script, append([]string{"up", prefix, natA, natB}, opts...)...).CombinedOutput(); err != nil {
				t.Errorf("lab up: %v\n%s", err, out)
			}
		})
	})
	if t.Failed() {
		t.FailNow()
	}
	return l
}

func (l *lab) cmd(host string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.prefix + "-" + host}, args...)...)
}

// run runs a command in host and returns its stdout; it fails the test
// with the command's output on error.
func (l *lab) run(host string, args ...string) string {
	l.t.Helper()
	var stdout, stderr bytes.Buffer
	c := l.cmd(host, args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		l.t.Fatalf("%s: %s: %v\nstdout: %s\nstderr: %s", host, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// proc is a background process in the lab; its output goes to a log file
// that is printed if the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (l *lab) start(host, name string, args ...string) *proc {
	l.t.Helper()
	p := &proc{name: name, log: filepath.Join(l.dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		l.t.Fatal(err)
	}
	p.cmd = l.cmd(host, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); f.Close(); close(p.done) }()
	l.t.Cleanup(func() {
		p.stop()
		if l.t.Failed() || os.Getenv("PUNCHTUN_LAB_LOGS") == "1" {
			out, _ := os.ReadFile(p.log)
			l.t.Logf("--- %s (%s) log:\n%s", name, host, out)
		}
	})
	return p
}

// stop sends SIGTERM and waits; a process that ignores it is killed.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// eventually polls cond until it returns nil or the deadline passes.
var eventually = testpoll.Eventually

type peerSpec struct {
	host, iface, addr string
	priv              key.Private
	// fixed is the public address:port others reach this peer at, for a
	// peer configured with a fixed Endpoint and no rendezvous.
	fixed string
	port  int // ListenPort, 0 for any
}

func newPeer(t *testing.T, host, iface, addr string) *peerSpec {
	claimName(t, "interface", iface)
	k, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return &peerSpec{host: host, iface: iface, addr: addr, priv: k}
}

// writeConfig writes p's config naming other as its peer, found through the
// rendezvous, and returns its path: <iface>.conf, so up names the interface.
func (l *lab) writeConfig(p, other *peerSpec, rvKey key.Private) string {
	conf := fmt.Sprintf("# written by the lab test\n[Interface]\nPrivateKey = %s\nAddress = %s/24\n", p.priv.Encode(), p.addr)
	if p.fixed != "" {
		_, port, _ := strings.Cut(p.fixed, ":")
		conf += "ListenPort = " + port + "\n"
	} else {
		if p.port != 0 {
			conf += fmt.Sprintf("ListenPort = %d\n", p.port)
		}
		conf += fmt.Sprintf("Rendezvous = %s\nRendezvousKey = %s\n", rendezvousAddr, rvKey.Public())
	}
	conf += fmt.Sprintf("\n[Peer]\nName = %s\nPublicKey = %s\nAllowedIPs = %s/32\n", other.host, other.priv.Public(), other.addr)
	if other.fixed != "" {
		conf += "Endpoint = " + other.fixed + "\n"
	}
	path := filepath.Join(l.dir, p.iface+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		l.t.Fatal(err)
	}
	return path
}

// startRendezvous starts the rendezvous on rendezvousAddr and a second
// address: STUN answers advertise the second, so peers can tell whether
// their NAT maps per destination. The second is rendezvousAddr2, another
// IP, unless given.
func (l *lab) startRendezvous(second ...string) key.Private {
	l.t.Helper()
	_, rvKey := l.launchRendezvous(second...)
	return rvKey
}

// launchRendezvous is startRendezvous, returning the process too.
func (l *lab) launchRendezvous(second ...string) (*proc, key.Private) {
	l.t.Helper()
	other := rendezvousAddr2
	if len(second) > 0 {
		other = second[0]
	}
	return l.launchRendezvousWith("--listen", rendezvousAddr, "--listen", other)
}

// launchRendezvousWith starts the rendezvous with a new key and args.
func (l *lab) launchRendezvousWith(args ...string) (*proc, key.Private) {
	l.t.Helper()
	rvKey, _ := key.NewPrivate()
	keyFile := filepath.Join(l.dir, "rendezvous.key")
	os.WriteFile(keyFile, []byte(rvKey.Encode()+"\n"), 0o600)
	return l.start("rv", "rendezvous", append([]string{l.bin, "rendezvous", "--key-file", keyFile}, args...)...), rvKey
}

func (l *lab) up(p, other *peerSpec, rvKey key.Private) *proc {
	l.t.Helper()
	return l.startPeer(p, l.writeConfig(p, other, rvKey), p.iface)
}

// startPeer runs `punchtun up conf` for p, its log named logName, and
// returns once the peer answers status. Every start of p shares its run
// and state directories, so a restart finds what the last run kept.
func (l *lab) startPeer(p *peerSpec, conf, logName string) *proc {
	l.t.Helper()
	args := []string{l.bin, "up", conf, "--run-dir", filepath.Join(l.dir, "run-"+p.iface), "--state-dir", filepath.Join(l.dir, "state")}
	if level := cmp.Or(l.logLevel, os.Getenv("PUNCHTUN_LAB_LOG_LEVEL")); level != "" {
		args = append(args, "--log-level", level)
	}
	pr := l.start(p.host, logName, args...)
	// Up when it answers status: the interface then has its addresses.
	eventually(l.t, 10*time.Second, p.iface+" up", func() error {
		_, err := l.status(p)
		return err
	})
	return pr
}

// waitHooks waits until the peer pr logged "interface up": its PostUp
// hooks have run then (status answers before they do).
func (l *lab) waitHooks(pr *proc) {
	l.t.Helper()
	eventually(l.t, 10*time.Second, pr.name+" ran its PostUp hooks", func() error {
		if b, _ := os.ReadFile(pr.log); !strings.Contains(string(b), `msg="interface up"`) {
			return fmt.Errorf("no \"interface up\" in its log yet")
		}
		return nil
	})
}

func (l *lab) status(p *peerSpec) (*tunnel.Status, error) {
	out, err := l.cmd(p.host, l.bin, "status", p.iface, "--json", "--run-dir", filepath.Join(l.dir, "run-"+p.iface)).Output()
	if err != nil {
		return nil, fmt.Errorf("status: %v", err)
	}
	var st tunnel.Status
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("status --json: %v: %s", err, out)
	}
	return &st, nil
}

// waitPath waits until p reports a path of the wanted kind to its one peer.
func (l *lab) waitPath(p *peerSpec, want string) tunnel.PeerStatus {
	l.t.Helper()
	var ps tunnel.PeerStatus
	eventually(l.t, 20*time.Second, p.iface+" path "+want, func() error {
		st, err := l.status(p)
		if err != nil {
			return err
		}
		if len(st.Peers) != 1 {
			return fmt.Errorf("%d peers in status", len(st.Peers))
		}
		ps = st.Peers[0]
		if ps.Path != want {
			return fmt.Errorf("path %q (endpoint %q)", ps.Path, ps.Endpoint)
		}
		return nil
	})
	return ps
}

// transfer sends 10 MiB of random bytes from `from` to `to`'s virtual IP
// with nc and checks they arrive intact.
func (l *lab) transfer(from, to *peerSpec) {
	l.t.Helper()
	heavy(l.t, func() { l.transferNow(from, to) })
}

func (l *lab) transferNow(from, to *peerSpec) {
	l.t.Helper()
	data := make([]byte, 10<<20)
	rand.Read(data)
	src, dst := filepath.Join(l.dir, "send.bin"), filepath.Join(l.dir, "recv.bin")
	os.WriteFile(src, data, 0o600)
	os.Remove(dst)
	listener := l.start(to.host, "nc-listen-"+to.iface, "sh", "-c", "exec nc -l -s "+to.addr+" -p 9000 > "+dst)
	eventually(l.t, 10*time.Second, "nc listening", func() error {
		out, _ := l.cmd(to.host, "ss", "-Hltn", "sport = :9000").Output()
		if !strings.Contains(string(out), "9000") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	l.run(from.host, "sh", "-c", "nc -N -w 10 "+to.addr+" 9000 < "+src)
	select {
	case <-listener.done:
	case <-time.After(30 * time.Second):
		l.t.Fatal("nc listener did not finish")
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		l.t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		l.t.Fatalf("10 MiB over nc: received %d bytes, sha256 differs", len(got))
	}
}

func (l *lab) ping(from *peerSpec, to *peerSpec) {
	l.t.Helper()
	l.run(from.host, "ping", "-c", "3", "-i", "0.2", "-W", "2", to.addr)
}

// ssh runs a command over ssh to `to`'s virtual IP, where an sshd listens.
func (l *lab) ssh(from, to *peerSpec) {
	l.t.Helper()
	heavy(l.t, func() { l.sshNow(from, to) })
}

func (l *lab) sshNow(from, to *peerSpec) {
	l.t.Helper()
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
	}
	if _, err := os.Stat(sshd); err != nil {
		skipLab(l.t, "ssh test needs openssh-server")
	}
	hostKey, userKey := filepath.Join(l.dir, "host_key"), filepath.Join(l.dir, "user_key")
	for _, k := range []string{hostKey, userKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			l.t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	authorized := filepath.Join(l.dir, "authorized_keys")
	pub, _ := os.ReadFile(userKey + ".pub")
	os.WriteFile(authorized, pub, 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	l.start(to.host, "sshd-"+to.iface, sshd, "-D", "-e", "-f", "/dev/null",
		"-o", "ListenAddress="+to.addr, "-o", "HostKey="+hostKey, "-o", "AuthorizedKeysFile="+authorized,
		"-o", "PidFile=none", "-o", "StrictModes=no", "-o", "UsePAM=no", "-o", "PermitRootLogin=prohibit-password")
	var out string
	eventually(l.t, 10*time.Second, "ssh over the tunnel", func() error {
		b, err := l.cmd(from.host, "ssh", "-i", userKey, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "root@"+to.addr, "echo", "hello-from-$(hostname)-over-punchtun").CombinedOutput()
		out = string(b)
		if err != nil {
			return fmt.Errorf("%v: %s", err, b)
		}
		return nil
	})
	if !strings.Contains(out, "over-punchtun") {
		l.t.Fatalf("ssh output: %q", out)
	}
}

// TestTunnel connects pairs of hosts in one lab with both NATs easy and
// checks everything a user does: ping, nc, ssh, status and wg show.
func TestTunnel(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptt", "easy", "easy")
	runPairs(t, l, l.startRendezvous(), []pairCase{
		// a1 and b1 share the private address 192.168.1.2 on different
		// LANs: each one's LAN candidate leads to itself, never the peer.
		{name: "easy-easy", hostA: "a1", hostB: "b1", wantPath: "direct", ssh: true},
		{name: "none-easy", hostA: "pub", hostB: "b1", wantPath: "direct", ssh: true},
		{name: "same-lan", hostA: "a1", hostB: "a2", wantPath: "lan", ssh: true},
		{name: "fixed-endpoints", hostA: "pub", hostB: "rv", wantPath: "direct", fixedA: "203.0.113.20:51820", fixedB: "203.0.113.10:51821", ssh: true},
	})
}
