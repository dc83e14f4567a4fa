//go:build linux

package main

// Interoperability tests: punchtun against software we did not write — a
// plain WireGuard peer (wireguard-go configured with wg), coturn's STUN
// client and coturn's STUN server — and `punchtun netcheck`'s answers for
// every kind of network in the lab. Lab prefixes ptiw, ptis, ptic, ptn,
// ptn1 and ptnbc; interface names start with pti (wg's UAPI sockets in
// /var/run/wireguard are shared by all namespaces).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// wireguardGo builds the wireguard-go program — the main package of the
// module's own golang.zx2c4.com/wireguard dependency, so the version in
// go.mod — once per test run.
func wireguardGo(t *testing.T) string {
	return buildTool(t, "wireguard-go", "golang.zx2c4.com/wireguard")
}

// requireTools skips (fails under PUNCHTUN_REQUIRE_LAB=1) when a program
// the test drives is not installed.
func requireTools(t *testing.T, pkg string, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			skipLab(t, "this test needs "+tool+": apt-get install "+pkg)
		}
	}
}

// waitUDP waits until host has n UDP sockets bound to port.
func (l *lab) waitUDP(host string, port, n int) {
	l.t.Helper()
	eventually(l.t, 10*time.Second, fmt.Sprintf("%d UDP sockets on port %d in %s", n, port, host), func() error {
		out, err := l.cmd(host, "ss", "-Hlun", fmt.Sprintf("sport = :%d", port)).Output()
		if err != nil {
			return err
		}
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); lines[0] == "" || len(lines) < n {
			return fmt.Errorf("ss: %q", out)
		}
		return nil
	})
}

// upConfig runs `punchtun up` on p with a config written by the test, and
// waits until it answers status.
func (l *lab) upConfig(p *peerSpec, conf string) *proc {
	l.t.Helper()
	path := filepath.Join(l.dir, p.iface+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		l.t.Fatal(err)
	}
	pr := l.start(p.host, p.iface, l.bin, "up", path, "--run-dir", filepath.Join(l.dir, "run-"+p.iface), "--state-dir", "-")
	eventually(l.t, 10*time.Second, p.iface+" up", func() error {
		_, err := l.status(p)
		return err
	})
	return pr
}

// stopGone stops pr, expects a clean exit, and expects the interface of p
// to be gone with it.
func (l *lab) stopGone(pr *proc, p *peerSpec) {
	l.t.Helper()
	if err := pr.stop(); err != nil {
		l.t.Errorf("%s exited with %v after SIGTERM", pr.name, err)
	}
	if err := l.cmd(p.host, "ip", "link", "show", p.iface).Run(); err == nil {
		l.t.Errorf("%s still exists after %s exited", p.iface, pr.name)
	}
}

// TestInteropWireGuard connects a punchtun peer behind NAT A to a plain
// WireGuard peer on the public host: the wireguard-go program, configured
// only with wg setconf and ip. punchtun's config has the fixed Endpoint and
// no rendezvous, as a road warrior's config for a WireGuard server has.
func TestInteropWireGuard(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptiw", "easy", "easy")
	requireTools(t, "wireguard-tools", "wg")
	wgGo := wireguardGo(t)

	pt := newPeer(t, "a1", "ptiup", "100.64.0.1")
	wg := newPeer(t, "pub", "ptiwg", "100.64.0.2")

	// The plain WireGuard peer: it knows punchtun's key, not its address,
	// and learns that from the first handshake, through NAT A.
	os.Remove("/var/run/wireguard/" + wg.iface + ".sock") // left by a killed run
	wgProc := l.start(wg.host, "wireguard-go", "env", "WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=verbose", wgGo, wg.iface)
	eventually(t, 10*time.Second, "wireguard-go answers wg", func() error {
		return l.cmd(wg.host, "wg", "show", wg.iface).Run()
	})
	wgConf := filepath.Join(l.dir, wg.iface+".conf")
	os.WriteFile(wgConf, []byte(fmt.Sprintf("[Interface]\nPrivateKey = %s\nListenPort = 51820\n\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\n",
		wg.priv.Encode(), pt.priv.Public(), pt.addr)), 0o600)
	l.run(wg.host, "wg", "setconf", wg.iface, wgConf)
	l.run(wg.host, "ip", "addr", "add", wg.addr+"/24", "dev", wg.iface)
	l.run(wg.host, "ip", "link", "set", wg.iface, "up")

	ptProc := l.upConfig(pt, fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = %s/24\n\n"+
		"[Peer]\nName = wireguard-go\nPublicKey = %s\nAllowedIPs = %s/32\nEndpoint = 203.0.113.20:51820\nPersistentKeepalive = 25\n",
		pt.priv.Encode(), pt.addr, wg.priv.Public(), wg.addr))

	// The first ping waits for the handshake punchtun starts.
	eventually(t, 15*time.Second, "first ping punchtun -> wireguard-go", func() error {
		return l.cmd(pt.host, "ping", "-c", "1", "-W", "1", wg.addr).Run()
	})
	l.ping(pt, wg)
	l.ping(wg, pt)
	l.transfer(pt, wg)
	l.transfer(wg, pt)

	// wg reads punchtun's interface through its UAPI socket as it reads
	// any WireGuard interface.
	wgPub := wg.priv.Public().String()
	show := l.run(pt.host, "wg", "show", pt.iface)
	for _, want := range []string{"interface: " + pt.iface, "public key: " + pt.priv.Public().String(),
		"peer: " + wgPub, "endpoint: 203.0.113.20:51820", "allowed ips: " + wg.addr + "/32", "latest handshake:"} {
		if !strings.Contains(show, want) {
			t.Errorf("wg show %s lacks %q:\n%s", pt.iface, want, show)
		}
	}
	showconf := l.run(pt.host, "wg", "showconf", pt.iface)
	for _, want := range []string{"PrivateKey = " + pt.priv.Encode(), "PublicKey = " + wgPub,
		"Endpoint = 203.0.113.20:51820", "AllowedIPs = " + wg.addr + "/32", "PersistentKeepalive = 25"} {
		if !strings.Contains(showconf, want) {
			t.Errorf("wg showconf %s lacks %q:\n%s", pt.iface, want, showconf)
		}
	}
	// The WireGuard side saw punchtun come from NAT A's public address.
	eps := l.run(wg.host, "wg", "show", wg.iface, "endpoints")
	if !regexp.MustCompile(regexp.QuoteMeta(pt.priv.Public().String()) + `\s+203\.0\.113\.21:\d+`).MatchString(eps) {
		t.Errorf("wireguard-go's endpoint for punchtun is not NAT A's public address:\n%s", eps)
	}
	st, err := l.status(pt)
	if err != nil {
		t.Fatal(err)
	}
	if p := st.Peers[0]; p.Endpoint != "203.0.113.20:51820" || p.LastHandshake == "" || p.RxBytes < 10<<20 {
		t.Errorf("punchtun status of the WireGuard peer: %+v", p)
	}

	l.stopGone(ptProc, pt)
	l.stopGone(wgProc, wg)
}

// stunReflexive matches the mapped address turnutils_stunclient prints:
// "0: : IPv4. UDP reflexive addr: 203.0.113.21:40123".
var stunReflexive = regexp.MustCompile(`UDP reflexive addr: (\d+\.\d+\.\d+\.\d+):(\d+)`)

// TestInteropSTUNClient asks the rendezvous for the mapped address with
// coturn's turnutils_stunclient, from behind each NAT and from the public
// host. (Debian's older `stun` client sends RFC 3489 requests, without the
// magic cookie, which the rendezvous does not answer.)
func TestInteropSTUNClient(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptis", "easy", "hard")
	requireTools(t, "coturn", "turnutils_stunclient")
	l.startRendezvous() // 203.0.113.10:3478 and .11:3478

	// A rendezvous with one address and no alternate port: a plain RFC
	// 8489 binding, after which the client exits.
	single := filepath.Join(l.dir, "single.key")
	l.start("rv", "rendezvous-single", l.bin, "rendezvous", "--listen", "203.0.113.10:3479", "--alternate-port=false", "--listen-tcp", "off", "--key-file", single)
	l.waitUDP("rv", 3478, 2)
	l.waitUDP("rv", 3479, 1)

	for _, tc := range []struct{ host, public string }{
		{"a1", "203.0.113.21"}, // easy NAT A
		{"b1", "203.0.113.22"}, // hard NAT B
		{"pub", "203.0.113.20"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.prefix+"-"+tc.host,
			"turnutils_stunclient", "-p", "3479", "203.0.113.10").CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s: turnutils_stunclient: %v\n%s", tc.host, err, out)
			continue
		}
		m := stunReflexive.FindStringSubmatch(string(out))
		if m == nil || m[1] != tc.public || m[2] == "0" {
			t.Errorf("%s: mapped address is not %s:PORT:\n%s", tc.host, tc.public, out)
		}
	}

	// The two-address rendezvous advertises its other address (RFC 5780
	// OTHER-ADDRESS), which the client prints with the mapped address. The
	// client then goes on to RFC 5780's CHANGE-REQUEST test, which the
	// rendezvous does not implement, and waits for that answer for ever:
	// so read its output while it runs, and stop it.
	sc := l.start("a1", "turnutils_stunclient-5780", "turnutils_stunclient", "203.0.113.10")
	eventually(t, 10*time.Second, "mapped and other address from the two-address rendezvous", func() error {
		out, _ := os.ReadFile(sc.log)
		m := stunReflexive.FindStringSubmatch(string(out))
		if m == nil || !strings.Contains(string(out), "Other addr: : "+rendezvousAddr2) {
			return fmt.Errorf("output so far: %q", out)
		}
		if m[1] != "203.0.113.21" {
			t.Fatalf("mapped address %s:%s, want 203.0.113.21:PORT:\n%s", m[1], m[2], out)
		}
		return nil
	})
	sc.stop()
}

// netcheckReport is `punchtun netcheck --json`, as a user's script reads it.
type netcheckReport struct {
	UDP           bool   `json:"udp"`
	Public        string `json:"public"`
	Mapping       string `json:"mapping"`
	PortPreserved bool   `json:"port_preserved"`
	LocalPort     int    `json:"local_port"`
	Seen          []struct {
		Server string `json:"server"`
		Mapped string `json:"mapped"`
	} `json:"seen"`
}

func (l *lab) netcheck(host string, servers ...string) netcheckReport {
	l.t.Helper()
	args := []string{l.bin, "netcheck", "--json"}
	for _, s := range servers {
		args = append(args, "--rendezvous", s)
	}
	out := l.run(host, args...)
	var r netcheckReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		l.t.Fatalf("%s: netcheck --json: %v\n%s", host, err, out)
	}
	return r
}

// netcheckWant is what netcheck must report on one host.
type netcheckWant struct {
	host, mapping string
	udp           bool
	publicIP      string // "" for none
	portPreserved bool
	// servers the answers came from, in order: the one asked, then the
	// alternate address it advertised.
	servers []string
}

func (l *lab) checkNetcheck(w netcheckWant, servers ...string) {
	l.t.Helper()
	r := l.netcheck(w.host, servers...)
	ip, port, _ := strings.Cut(r.Public, ":")
	var seen []string
	for _, s := range r.Seen {
		seen = append(seen, s.Server)
		if sip, _, _ := strings.Cut(s.Mapped, ":"); sip != w.publicIP {
			l.t.Errorf("%s: %s saw us as %s, want %s", w.host, s.Server, s.Mapped, w.publicIP)
		}
	}
	if r.UDP != w.udp || r.Mapping != w.mapping || ip != w.publicIP || (w.publicIP != "" && port == "") ||
		r.PortPreserved != w.portPreserved || strings.Join(seen, " ") != strings.Join(w.servers, " ") {
		l.t.Errorf("%s: netcheck: %+v\nwant udp %v, mapping %s, public %s:PORT, port_preserved %v, answers from %v",
			w.host, r, w.udp, w.mapping, w.publicIP, w.portPreserved, w.servers)
	}
	if w.portPreserved && port != fmt.Sprint(r.LocalPort) {
		l.t.Errorf("%s: port preserved, but public %s and local port %d", w.host, r.Public, r.LocalPort)
	}
}

// TestInteropCoturn runs `punchtun netcheck` against coturn's STUN server,
// listening on the rendezvous host's two addresses: coturn advertises its
// other address and port (RFC 5780 OTHER-ADDRESS), and netcheck, given only
// the first, asks that one too to tell the NAT's mapping.
func TestInteropCoturn(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptic", "easy", "hard")
	requireTools(t, "coturn", "turnserver")
	turn := l.start("rv", "turnserver", "turnserver", "-n", "--stun-only", "--no-cli",
		"--listening-ip", "203.0.113.10", "--listening-ip", "203.0.113.11", "--listening-port", "3478",
		"--no-tcp", "--no-tls", "--no-dtls", "--log-file", "stdout", "--simple-log",
		"--pidfile", filepath.Join(l.dir, "turnserver.pid"), "--db", filepath.Join(l.dir, "turndb"))
	// Two addresses, each on the listening port and on the alternate one
	// (port + 1) for RFC 5780's change requests.
	l.waitUDP("rv", 3478, 2)
	l.waitUDP("rv", 3479, 2)

	other := []string{"203.0.113.10:3478", "203.0.113.11:3479"}
	for _, w := range []netcheckWant{
		{host: "pub", udp: true, mapping: "none", publicIP: "203.0.113.20", portPreserved: true, servers: other},
		{host: "a1", udp: true, mapping: "easy", publicIP: "203.0.113.21", portPreserved: true, servers: other},
		{host: "b1", udp: true, mapping: "hard", publicIP: "203.0.113.22", portPreserved: false, servers: other},
	} {
		l.checkNetcheck(w, "203.0.113.10:3478")
	}

	turn.stop() // SIGTERM ends it ("signal: terminated"); the cleanup would too
	if out, _ := l.cmd("rv", "ss", "-Hlun", "sport = :3478").Output(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("turnserver still listens after it was stopped:\n%s", out)
	}
}

// TestInteropNetcheck runs `punchtun netcheck` against the punchtun
// rendezvous (two addresses, so it advertises the second) from a host of
// every kind of network: no NAT, easy, hard, cone and UDP blocked; and
// against a rendezvous on two ports of one address.
func TestInteropNetcheck(t *testing.T) {
	t.Parallel()
	both := []string{rendezvousAddr, rendezvousAddr2}
	t.Run("none-easy-hard", func(t *testing.T) {
		t.Parallel()
		l := newLab(t, "ptn", "easy", "hard")
		l.startRendezvous()
		l.waitUDP("rv", 3478, 2)
		for _, w := range []netcheckWant{
			{host: "pub", udp: true, mapping: "none", publicIP: "203.0.113.20", portPreserved: true, servers: both},
			{host: "a1", udp: true, mapping: "easy", publicIP: "203.0.113.21", portPreserved: true, servers: both},
			{host: "b1", udp: true, mapping: "hard", publicIP: "203.0.113.22", portPreserved: false, servers: both},
		} {
			l.checkNetcheck(w, rendezvousAddr)
		}
		// Both addresses given: the same answers, without relying on
		// OTHER-ADDRESS.
		l.checkNetcheck(netcheckWant{host: "b1", udp: true, mapping: "hard", publicIP: "203.0.113.22", servers: both}, both...)
	})
	t.Run("one-ip-rendezvous", func(t *testing.T) {
		t.Parallel()
		l := newLab(t, "ptn1", "easy", "hard")
		ports := []string{rendezvousAddr, "203.0.113.10:3479"}
		l.startRendezvous(ports[1])
		l.waitUDP("rv", 3478, 1)
		l.waitUDP("rv", 3479, 1)
		for _, w := range []netcheckWant{
			{host: "a1", udp: true, mapping: "easy", publicIP: "203.0.113.21", portPreserved: true, servers: ports},
			{host: "b1", udp: true, mapping: "hard", publicIP: "203.0.113.22", portPreserved: false, servers: ports},
		} {
			l.checkNetcheck(w, rendezvousAddr)
		}
	})
	t.Run("blocked-cone", func(t *testing.T) {
		t.Parallel()
		l := newLab(t, "ptnbc", "blocked", "cone")
		l.startRendezvous()
		l.waitUDP("rv", 3478, 2)
		for _, w := range []netcheckWant{
			{host: "a1", udp: false, mapping: "udp-blocked"},
			// netcheck's socket is not on the forwarded port: a cone NAT
			// maps it as an easy one does.
			{host: "b1", udp: true, mapping: "easy", publicIP: "203.0.113.22", portPreserved: true, servers: both},
		} {
			l.checkNetcheck(w, rendezvousAddr)
		}
	})
}
