package userspace_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/punchtun/punchtun/tunnel/testpoll"
)

// The rootless harness: the punchtun binary, built once, run as child
// processes on loopback UDP — a rendezvous and userspace peers — as
// whichever user runs the tests. Nothing here needs root.

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// binary builds punchtun once per test run.
func binary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		if build.dir, build.err = os.MkdirTemp("", "punchtun-rootless"); build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "punchtun")
		out, err := exec.Command("go", "build", "-o", build.bin, "../../cmd/punchtun").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

// harness is one test's rendezvous and peers, in a directory of its own.
type harness struct {
	t       *testing.T
	dir     string
	bin     string
	rdvAddr string
	rdvKey  string
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, dir: t.TempDir(), bin: binary(t)}
	priv, pub := h.genkey()
	keyFile := filepath.Join(h.dir, "rendezvous.key")
	os.WriteFile(keyFile, []byte(priv+"\n"), 0o600)
	h.rdvKey = pub
	h.rdvAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t, "udp"))
	h.spawn("rendezvous", "rendezvous", "--listen", h.rdvAddr, "--listen-tcp", "off", "--alternate-port=false",
		"--key-file", keyFile, "--state-file", "-")
	return h
}

// punchtun runs a punchtun command to its end.
func (h *harness) punchtun(stdin string, args ...string) (string, string, error) {
	return h.punchtunStart(stdin, args...)()
}

// punchtunStart starts a punchtun command and returns what waits for its
// end: its output, errors and exit status.
func (h *harness) punchtunStart(stdin string, args ...string) (wait func() (string, string, error)) {
	cmd := exec.Command(h.bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		return func() (string, string, error) { return "", "", err }
	}
	return func() (string, string, error) {
		err := cmd.Wait()
		return out.String(), errOut.String(), err
	}
}

func (h *harness) genkey() (priv, pub string) {
	h.t.Helper()
	priv, _, err := h.punchtun("", "genkey")
	if err != nil {
		h.t.Fatal(err)
	}
	pub, _, err = h.punchtun(priv, "pubkey")
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.TrimSpace(priv), strings.TrimSpace(pub)
}

// proc is a punchtun that runs until stopped; its stderr goes to a log
// file shown when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (h *harness) spawn(name string, args ...string) *proc {
	h.t.Helper()
	// A log of its own for each run of a name (a peer restarted), each
	// shown once.
	label := name
	for i := 2; fileExists(filepath.Join(h.dir, label+".log")); i++ {
		label = fmt.Sprintf("%s-%d", name, i)
	}
	p := &proc{name: name, cmd: exec.Command(h.bin, args...), log: filepath.Join(h.dir, label+".log"), done: make(chan struct{})}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		h.t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	f.Close()
	go func() { p.cmd.Wait(); close(p.done) }()
	h.t.Cleanup(func() {
		p.stop()
		if h.t.Failed() {
			b, _ := os.ReadFile(p.log)
			h.t.Logf("--- %s's log:\n%s", label, b)
		}
	})
	return p
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// stop ends the process with SIGTERM (SIGKILL after 10 s) and waits.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// peer is a userspace punchtun.
type peer struct {
	*proc
	h          *harness
	iface      string
	conf       string
	runDir     string
	socks      string
	httpProxy  string
	extraFlags []string
}

// peerConfig is the [Interface] of a peer found through the harness's
// rendezvous, with more lines (keys of [Interface], then [Peer]s).
func (h *harness) peerConfig(priv, more string) string {
	return h.peerConfigVia(h.rdvAddr, priv, more)
}

// peerConfigVia is peerConfig with the rendezvous reached at rdv (the
// inside of a test's NAT in front of it).
func (h *harness) peerConfigVia(rdv, priv, more string) string {
	return fmt.Sprintf("[Interface]\nPrivateKey = %s\nRendezvous = %s\nRendezvousKey = %s\n%s", priv, rdv, h.rdvKey, more)
}

// up writes conf and starts a userspace peer on it, with a SOCKS5 and an
// HTTP proxy on free loopback ports and a state and run directory of its own.
func (h *harness) up(iface, conf string, flags ...string) *peer {
	h.t.Helper()
	p := &peer{h: h, iface: iface, conf: filepath.Join(h.dir, iface+".conf"), runDir: filepath.Join(h.dir, "run-"+iface),
		socks:     fmt.Sprintf("127.0.0.1:%d", freePort(h.t, "tcp")),
		httpProxy: fmt.Sprintf("127.0.0.1:%d", freePort(h.t, "tcp")), extraFlags: flags}
	if err := os.WriteFile(p.conf, []byte(conf), 0o600); err != nil {
		h.t.Fatal(err)
	}
	p.start()
	return p
}

// start runs the peer's punchtun and waits for its status socket.
func (p *peer) start() {
	h := p.h
	// Debug: a failing test prints the logs, and WireGuard's own (a
	// handshake message refused, and why) are at debug.
	args := append([]string{"up", "--userspace", "--log-level", "debug", "--socks5", p.socks, "--http-proxy", p.httpProxy,
		"--run-dir", p.runDir, "--state-dir", filepath.Join(h.dir, "state-"+p.iface), p.conf}, p.extraFlags...)
	p.proc = h.spawn(p.iface, args...)
	eventually(h.t, 10*time.Second, p.iface+" serves its status", func() error {
		select {
		case <-p.done:
			b, _ := os.ReadFile(p.log)
			h.t.Fatalf("%s exited:\n%s", p.iface, b)
		default:
		}
		_, err := p.status()
		return err
	})
}

// restart stops the peer and starts it again on the same config.
func (p *peer) restart() {
	p.stop()
	p.start()
}

// restartWith stops the peer and starts it again on conf.
func (p *peer) restartWith(conf string) {
	p.h.t.Helper()
	p.stop()
	if err := os.WriteFile(p.conf, []byte(conf), 0o600); err != nil {
		p.h.t.Fatal(err)
	}
	p.start()
}

// status is what the peer's `punchtun status --json` says.
type status struct {
	Mode      string   `json:"mode"`
	SOCKS5    string   `json:"socks5"`
	HTTPProxy string   `json:"http_proxy"`
	Forwards  []string `json:"forwards"`
	// StackDropped is nil when status leaves it out.
	StackDropped *uint64 `json:"stack_dropped"`
	Rendezvous   []struct {
		Registered bool `json:"registered"`
	} `json:"rendezvous"`
	Peers []struct {
		Name          string       `json:"name"`
		Path          string       `json:"path"`
		LastHandshake string       `json:"last_handshake"`
		Via           string       `json:"via"`
		History       []pathChange `json:"history"`
		Member        bool         `json:"member"`
		ValidUntil    string       `json:"valid_until"`
	} `json:"peers"`
	Network *struct {
		Members     int               `json:"members"`
		RevokedKeys int               `json:"revoked_keys"`
		Refused     string            `json:"refused"`
		Refusals    map[string]uint64 `json:"refusals"`
		Policy      *struct {
			Seq     uint64            `json:"seq"`
			Dropped map[string]uint64 `json:"dropped"`
		} `json:"policy"`
	} `json:"network"`
}

// pathChange is one of a peer's path history.
type pathChange struct{ To, Why string }

// waitRegistered waits until p is registered with a rendezvous: until
// then, a member that looks p up finds no one.
func (p *peer) waitRegistered(within time.Duration) {
	p.h.t.Helper()
	eventually(p.h.t, within, p.iface+" registered with the rendezvous", func() error {
		st, err := p.status()
		if err != nil {
			return err
		}
		for _, r := range st.Rendezvous {
			if r.Registered {
				return nil
			}
		}
		return fmt.Errorf("not registered: %+v", st.Rendezvous)
	})
}

func (p *peer) status() (*status, error) {
	out, errOut, err := p.h.punchtun("", "status", "--json", "--run-dir", p.runDir, p.iface)
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, errOut)
	}
	var st status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// direct is a path that is no relay: the harness's peers share a host,
// so they may find each other through a LAN address as well.
const direct = "direct|lan"

// waitPath waits until the peer has a session with name over path (one
// of |-separated paths).
func (p *peer) waitPath(name, path string, within time.Duration) {
	p.h.t.Helper()
	eventually(p.h.t, within, fmt.Sprintf("%s reaches %s over %s", p.iface, name, path), func() error {
		st, err := p.status()
		if err != nil {
			return err
		}
		for _, ps := range st.Peers {
			if ps.Name == name {
				if !slices.Contains(strings.Split(path, "|"), ps.Path) || ps.LastHandshake == "" {
					return fmt.Errorf("path %s, handshake %q", ps.Path, ps.LastHandshake)
				}
				return nil
			}
		}
		return fmt.Errorf("no peer %s in status", name)
	})
}

// eventually polls cond until it returns nil or the deadline passes.
var eventually = testpoll.Eventually

// freePort is a port free on loopback now.
func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// echoServer echoes every TCP connection on loopback until the test ends.
func echoServer(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}
