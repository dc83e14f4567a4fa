//go:build linux

package main

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel"
)

// The port mapping tests run the real home-router daemon, Debian 13's
// miniupnpd 2.3.9 (NAT-PMP, PCP, UPnP IGD), on the lab's hard NAT routers,
// from the root scripts/miniupnpd.sh makes.

// miniupnpdRoot is that root, or the test is skipped (failed in CI).
func miniupnpdRoot(t *testing.T) string {
	root := cmp.Or(os.Getenv("PUNCHTUN_MINIUPNPD_ROOT"), "/var/cache/punchtun/trixie")
	if _, err := os.Stat(filepath.Join(root, "usr/sbin/miniupnpd")); err != nil {
		skipLab(t, "the port mapping tests need miniupnpd's Debian 13 root: run scripts/miniupnpd.sh (scripts/test.sh does)")
	}
	return root
}

// miniupnpd is the daemon on one router.
type miniupnpd struct {
	l      *lab
	router string
	root   string
	conf   string // inside root
	proc   *proc
	n      int // starts, for log names
}

// routerConf says which protocols the router serves (miniupnpd has one
// switch for NAT-PMP and PCP together: the peer's PortMapping picks one);
// deny: it refuses every mapping (port mapping disabled by its permission
// rules).
func routerConf(protos []string, deny bool) string {
	enabled := func(ps ...string) string {
		for _, q := range protos {
			if slices.Contains(ps, q) {
				return "yes"
			}
		}
		return "no"
	}
	perm := "allow 1024-65535 192.168.1.0/24 1024-65535\n"
	if deny {
		perm = ""
	}
	return "ext_ifname=wan\nlistening_ip=lan\nhttp_port=0\n" +
		"enable_pcp_pmp=" + enabled("natpmp", "pcp") + "\nenable_upnp=" + enabled("upnp") + "\n" +
		"ext_allow_private_ipv4=yes\nsecure_mode=yes\n" +
		"upnp_table_name=miniupnpd\nupnp_nat_table_name=miniupnpd\n" +
		"uuid=3a3a6a6a-0000-4000-8000-000000000001\n" +
		perm + "deny 0-65535 0.0.0.0/0 0-65535\n"
}

// startMiniupnpd readies router's nftables for miniupnpd — its own table
// made by its nft_init.sh, whose forward chain drops by default, opened as
// a home router's is: replies and all from the LAN; and the lab's own
// forward chain lets in what miniupnpd forwards — and starts it serving
// protos (natpmp, pcp, upnp).
func (l *lab) startMiniupnpd(router string, deny bool, protos ...string) *miniupnpd {
	l.t.Helper()
	return l.startMiniupnpdConf(router, routerConf(protos, deny))
}

// startMiniupnpdConf is startMiniupnpd with miniupnpd's whole config.
func (l *lab) startMiniupnpdConf(router, conf string) *miniupnpd {
	l.t.Helper()
	root := miniupnpdRoot(l.t)
	m := &miniupnpd{l: l, router: router, root: root, conf: "/tmp/" + l.prefix + "-" + router + ".conf"}
	if err := os.WriteFile(filepath.Join(root, m.conf), []byte(conf), 0o644); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { os.Remove(filepath.Join(root, m.conf)) })
	l.run(router, "sh", filepath.Join(root, "etc/miniupnpd/nft_init.sh"), "-t", "miniupnpd", "-n", "miniupnpd")
	l.run(router, "nft", "add rule inet miniupnpd forward ct state established,related accept")
	l.run(router, "nft", "add rule inet miniupnpd forward iifname \"lan\" accept")
	l.run(router, "nft", "insert rule inet filter forward ct status dnat accept")
	m.start()
	return m
}

func (m *miniupnpd) start() {
	l := m.l
	l.t.Helper()
	m.n++
	pid := "/run/" + l.prefix + "-" + m.router + ".pid"
	l.t.Cleanup(func() { os.Remove(filepath.Join(m.root, pid)) }) // runs after the daemon's stop
	m.proc = l.start(m.router, fmt.Sprintf("miniupnpd-%s-%d", m.router, m.n), "chroot", m.root, "miniupnpd", "-f", m.conf, "-d", "-P", pid)
	// Ready when it listens: on 5351 for NAT-PMP and PCP, on TCP for UPnP.
	eventually(l.t, 10*time.Second, "miniupnpd listening", func() error {
		out, _ := l.cmd(m.router, "ss", "-Hlnup").Output()
		if !strings.Contains(string(out), "miniupnpd") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
}

// restart stops miniupnpd and starts it anew with no mappings, as after
// the router's reboot: its rules are gone (miniupnpd removes them on its
// way out; flushed here all the same).
func (m *miniupnpd) restart() {
	m.l.t.Helper()
	m.proc.stop()
	m.l.run(m.router, "nft", "flush chain inet miniupnpd prerouting_miniupnpd")
	m.l.run(m.router, "nft", "flush chain inet miniupnpd miniupnpd")
	m.start()
}

// rules is the router's DNAT rules that miniupnpd made.
func (m *miniupnpd) rules() string {
	out, _ := m.l.cmd(m.router, "nft", "list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd").CombinedOutput()
	return string(out)
}

// forwards reports whether the router forwards port to host's socket.
func (m *miniupnpd) forwards(port int, host string) error {
	return m.forwardsTo(port, host, port)
}

// forwardsTo reports whether the router forwards external to host's
// port internal.
func (m *miniupnpd) forwardsTo(external int, host string, internal int) error {
	// miniupnpd matches UDP by the IP header's protocol byte (0x11) and
	// the transport header's port.
	if r := m.rules(); !strings.Contains(r, fmt.Sprintf("0x11 th dport %d dnat ip to %s:%d", external, host, internal)) {
		return fmt.Errorf("no DNAT rule for UDP %d to %s:%d in:\n%s", external, host, internal, r)
	}
	return nil
}

// upMapped starts p with PortMapping = mode.
func (l *lab) upMapped(p, other *peerSpec, rvKey key.Private, mode string) *proc {
	l.t.Helper()
	conf := l.writeConfig(p, other, rvKey)
	b, _ := os.ReadFile(conf)
	os.WriteFile(conf, []byte(strings.Replace(string(b), "[Interface]\n", "[Interface]\nPortMapping = "+mode+"\n", 1)), 0o600)
	return l.startPeer(p, conf, p.iface)
}

// waitMapping waits until p's status shows its mapping offered over proto
// ("": any).
func (l *lab) waitMapping(p *peerSpec, proto string, within time.Duration) tunnel.Status {
	l.t.Helper()
	var st *tunnel.Status
	eventually(l.t, within, p.iface+" mapped over "+proto, func() error {
		var err error
		if st, err = l.status(p); err != nil {
			return err
		}
		if pm := st.PortMapping; !pm.Offered || proto != "" && pm.Protocol.String() != proto {
			return fmt.Errorf("port mapping %+v", pm)
		}
		return nil
	})
	return *st
}

// TestPortMappingHardHard: a peer behind a hard NAT whose router maps a
// port (each protocol alone, and all three) reaches a peer behind another
// hard NAT directly, from the first ping, within a second of the start;
// the router's nftables hold the forward while it is up and not after
// down.
func TestPortMappingHardHard(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptpm", "hard", "hard")
	rvKey := l.startRendezvous()
	for i, mode := range []string{"natpmp", "pcp", "upnp", "auto"} {
		t.Run(mode, func(t *testing.T) {
			l := *l
			l.t, l.dir = t, t.TempDir()
			protos := []string{mode}
			if mode == "auto" {
				protos = []string{"natpmp", "pcp", "upnp"}
			}
			router := l.startMiniupnpd("nata", false, protos...)
			defer router.proc.stop()
			a := newPeer(t, "a1", fmt.Sprintf("ptpma%d", i), "100.64.0.1")
			b := newPeer(t, "b1", fmt.Sprintf("ptpmb%d", i), "100.64.0.2")
			// From the start to direct both ways: timed.
			endQuiet := quietFrom(t)
			defer endQuiet()
			start := time.Now()
			pa := l.upMapped(a, b, rvKey, mode)
			l.upMapped(b, a, rvKey, "off")
			first := l.answeredWithin(a, b, start, 5*time.Second)
			want := mode
			if mode == "auto" {
				want = "" // the first to answer
			}
			st := l.waitMapping(a, want, 5*time.Second)
			direct := l.waitPath(a, "direct")
			row := matrixRow{Pair: "mapped(" + mode + ")-hard", Want: "direct", PathA: direct.Path, PathB: l.waitPath(b, "direct").Path, FirstPing: first.Seconds()}
			t.Cleanup(func() { row.OK = !t.Failed(); recordRow(t, row) })
			toDirect := time.Since(start)
			endQuiet()
			t.Logf("%s: first ping %.2f s after the start; direct both ways by %.2f s; mapped %s %s", mode, first.Seconds(), toDirect.Seconds(), st.PortMapping.Protocol, st.PortMapping.External)
			if first > time.Second {
				t.Errorf("first ping %v after the start, want within 1 s", first)
			}
			if !strings.HasPrefix(st.PortMapping.External, "203.0.113.21:") || direct.Endpoint == "" {
				t.Errorf("mapping %+v, path %+v", st.PortMapping, direct)
			}
			if err := router.forwards(int(st.ListenPort), "192.168.1.2"); err != nil {
				t.Error(err)
			}
			l.ping(a, b)
			l.ping(b, a)
			if err := pa.stop(); err != nil {
				t.Fatalf("down: %v", err)
			}
			if err := router.forwards(int(st.ListenPort), "192.168.1.2"); err == nil {
				t.Errorf("the forward is still on the router after down:\n%s", router.rules())
			}
		})
	}
}

// mappedPair starts a and b (PortMapping modes ma and mb) in the lab and
// returns them with a's process and when they started.
func (l *lab) mappedPair(i int, ma, mb string, rvKey key.Private) (a, b *peerSpec, pa *proc, start time.Time) {
	l.t.Helper()
	a = newPeer(l.t, "a1", fmt.Sprintf("%sa%d", l.prefix, i), "100.64.0.1")
	b = newPeer(l.t, "b1", fmt.Sprintf("%sb%d", l.prefix, i), "100.64.0.2")
	start = time.Now()
	pa = l.upMapped(a, b, rvKey, ma)
	l.upMapped(b, a, rvKey, mb)
	return a, b, pa, start
}

// TestPortMappingRouter: both sides mapped go direct; a miniupnpd
// restarted (its mappings and rules gone) maps again, and the pair is
// still direct, within 5 s; a router with port mapping disabled leaves
// hard/hard relayed as before, with the reason in status.
func TestPortMappingRouter(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptpr", "hard", "hard")
	rvKey := l.startRendezvous()
	sub := func(name string, f func(t *testing.T, l *lab)) {
		t.Run(name, func(t *testing.T) {
			l := *l
			l.t, l.dir = t, t.TempDir()
			f(t, &l)
		})
	}
	sub("both-mapped", func(t *testing.T, l *lab) {
		ra, rb := l.startMiniupnpd("nata", false, "natpmp", "pcp", "upnp"), l.startMiniupnpd("natb", false, "natpmp", "pcp", "upnp")
		defer ra.proc.stop()
		defer rb.proc.stop()
		endQuiet := quietFrom(t) // from the start to direct both ways: timed
		defer endQuiet()
		a, b, _, start := l.mappedPair(0, "auto", "auto", rvKey)
		first := l.answeredWithin(a, b, start, 5*time.Second)
		l.waitMapping(a, "", 5*time.Second)
		l.waitMapping(b, "", 5*time.Second)
		l.waitPath(a, "direct")
		l.waitPath(b, "direct")
		t.Logf("both mapped: first ping %.2f s after the start; direct both ways by %.2f s", first.Seconds(), time.Since(start).Seconds())
		endQuiet()
		if first > time.Second {
			t.Errorf("first ping %v after the start, want within 1 s", first)
		}
		l.ping(b, a)
	})
	// Each mode hears of the restart its own way: NAT-PMP's and PCP's
	// announcements, UPnP's SSDP NOTIFYs.
	for i, mode := range []string{"auto", "natpmp", "pcp", "upnp"} {
		sub("restart-"+mode, func(t *testing.T, l *lab) { l.remapAfterRestart(4+i, mode, rvKey) })
	}
	// A router with port mapping disabled answers nothing: 5351 is closed
	// and SSDP goes unanswered. (miniupnpd told to deny every mapping is no
	// model of it: 2.3.9 then tries every one of the 64k ports against its
	// rules before it answers, minutes later.)
	sub("disabled", func(t *testing.T, l *lab) {
		// The reason is due after the ask's 2-s timeout, 5 s at most:
		// timed, from the start.
		endQuiet := quietFrom(t)
		defer endQuiet()
		a, _, _, _ := l.mappedPair(3, "auto", "off", rvKey)
		eventually(t, 5*time.Second, "no gateway in status", func() error {
			st, err := l.status(a)
			if err != nil {
				return err
			}
			if st.PortMapping.Reason != "no gateway answered" {
				return fmt.Errorf("port mapping %+v", st.PortMapping)
			}
			return nil
		})
		endQuiet()
		l.waitPath(a, "relay")
	})
}

// addCarrierHome puts a home behind a carrier NAT into lab l: the
// carrier's router cgn (WAN 203.0.113.23, a hard NAT) with the home
// router home on its customer side (WAN 100.65.0.2, a hard NAT too) and
// host h1 (192.168.1.2) on the home's LAN.
func (l *lab) addCarrierHome() {
	l.t.Helper()
	ns := func(h string) string { return l.prefix + "-" + h }
	l.t.Cleanup(func() {
		for _, h := range []string{"h1", "home", "cgn"} {
			exec.Command("ip", "netns", "del", ns(h)).Run()
		}
	})
	root := func(args ...string) {
		l.t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, h := range []string{"cgn", "home", "h1"} {
		root("ip", "netns", "add", ns(h))
		l.run(h, "ip", "link", "set", "lo", "up")
	}
	const hardNAT = `table ip nat {
	chain postrouting { type nat hook postrouting priority srcnat; oifname "wan" masquerade random; }
}
table inet filter {
	chain forward { type filter hook forward priority filter; iifname "wan" ct state new drop; }
}
`
	root("ip", "link", "add", "wan", "netns", ns("cgn"), "type", "veth", "peer", "name", ns("cgn"), "netns", ns("inet"))
	l.run("inet", "ip", "link", "set", ns("cgn"), "master", "br0", "up")
	root("ip", "link", "add", "cust", "netns", ns("cgn"), "type", "veth", "peer", "name", "wan", "netns", ns("home"))
	root("ip", "link", "add", "lan", "netns", ns("home"), "type", "veth", "peer", "name", "eth0", "netns", ns("h1"))
	for _, c := range [][]string{
		{"cgn", "ip", "addr", "add", "203.0.113.23/24", "dev", "wan"},
		{"cgn", "ip", "addr", "add", "100.65.0.1/24", "dev", "cust"},
		{"cgn", "ip", "link", "set", "wan", "up"},
		{"cgn", "ip", "link", "set", "cust", "up"},
		{"cgn", "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"home", "ip", "addr", "add", "100.65.0.2/24", "dev", "wan"},
		{"home", "ip", "addr", "add", "192.168.1.1/24", "dev", "lan"},
		{"home", "ip", "link", "set", "wan", "up"},
		{"home", "ip", "link", "set", "lan", "up"},
		{"home", "ip", "route", "add", "default", "via", "100.65.0.1"},
		{"home", "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"h1", "ip", "addr", "add", "192.168.1.2/24", "dev", "eth0"},
		{"h1", "ip", "link", "set", "eth0", "up"},
		{"h1", "ip", "route", "add", "default", "via", "192.168.1.1"},
	} {
		l.run(c[0], c[1:]...)
	}
	rules := filepath.Join(l.dir, "carrier.nft")
	if err := os.WriteFile(rules, []byte(hardNAT), 0o600); err != nil {
		l.t.Fatal(err)
	}
	l.run("cgn", "nft", "-f", rules)
	l.run("home", "nft", "-f", rules)
}

// TestPortMappingCarrierNAT: a home router behind a carrier NAT maps the
// port, but its WAN address is not the public one the rendezvous sees:
// the forward leads nowhere, so it is not offered, and status says why.
func TestPortMappingCarrierNAT(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptpn", "hard", "hard")
	l.addCarrierHome()
	rvKey := l.startRendezvous()
	for i, mode := range []string{"natpmp", "pcp"} {
		t.Run(mode, func(t *testing.T) {
			l := *l
			l.t, l.dir = t, t.TempDir()
			router := l.startMiniupnpd("home", false, mode)
			defer router.proc.stop()
			a := newPeer(t, "h1", fmt.Sprintf("ptpna%d", i), "100.64.0.1")
			b := newPeer(t, "b1", fmt.Sprintf("ptpnb%d", i), "100.64.0.2")
			l.upMapped(a, b, rvKey, mode)
			l.upMapped(b, a, rvKey, "off")
			var pm tunnel.PortMappingStatus
			eventually(t, 5*time.Second, "double NAT in status", func() error {
				st, err := l.status(a)
				if err != nil {
					return err
				}
				if pm = st.PortMapping; pm.Offered || !strings.Contains(pm.Reason, "double NAT") || pm.Outcomes[mode]["double_nat"] != 1 {
					return fmt.Errorf("port mapping %+v", pm)
				}
				return nil
			})
			t.Logf("%s behind a carrier NAT: %s", mode, pm.Reason)
			if ps := l.waitPath(b, "relay"); ps.NAT != "hard" {
				t.Errorf("the peer sees %q, want hard (the mapping is not offered)", ps.NAT)
			}
			l.ping(a, b)
		})
	}
}

// remapAfterRestart: a peer mapped over mode (its router serving that
// protocol alone, or all three for auto) is mapped again, and still
// direct, within 5 s of miniupnpd's restart.
func (l *lab) remapAfterRestart(i int, mode string, rvKey key.Private) {
	t := l.t
	t.Helper()
	protos, want := []string{mode}, mode
	if mode == "auto" {
		protos, want = []string{"natpmp", "pcp", "upnp"}, ""
	}
	router := l.startMiniupnpd("nata", false, protos...)
	defer func() { router.proc.stop() }()
	a, b, _, _ := l.mappedPair(i, mode, "off", rvKey)
	st := l.waitMapping(a, want, 5*time.Second)
	l.waitPath(a, "direct")
	// From the restart to mapped and direct again: timed.
	endQuiet := quietFrom(t)
	defer endQuiet()
	restarted := time.Now() // the daemon's stop; its start follows at once
	router.restart()
	eventually(t, 5*time.Second, "mapped again after miniupnpd's restart", func() error {
		return router.forwards(int(st.ListenPort), "192.168.1.2")
	})
	again := time.Since(restarted)
	l.waitMapping(a, want, 5*time.Second)
	if ps := l.waitPath(a, "direct"); ps.Path != "direct" {
		t.Fatalf("path %+v", ps)
	}
	t.Logf("%s: mapped again %.2f s after miniupnpd restarted; still direct at %.2f s", mode, again.Seconds(), time.Since(restarted).Seconds())
	if time.Since(restarted) > 5*time.Second {
		t.Errorf("mapped and direct again only %v after the restart, want within 5 s", time.Since(restarted))
	}
	endQuiet()
	l.ping(a, b)
}
