//go:build linux

package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
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

// routerConf says which protocols the router serves; deny: it refuses
// every mapping (port mapping disabled by its permission rules).
func routerConf(protos []string, deny bool) string {
	enabled := func(p string) string {
		for _, q := range protos {
			if q == p {
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
		"enable_natpmp=" + enabled("natpmp") + "\nenable_pcp_pmp=" + enabled("pcp") + "\nenable_upnp=" + enabled("upnp") + "\n" +
		"ext_allow_private_ipv4=yes\nsecure_mode=yes\nsystem_uptime=yes\n" +
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
	root := miniupnpdRoot(l.t)
	m := &miniupnpd{l: l, router: router, root: root, conf: "/tmp/" + l.prefix + "-" + router + ".conf"}
	if err := os.WriteFile(filepath.Join(root, m.conf), []byte(routerConf(protos, deny)), 0o644); err != nil {
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

// restart stops miniupnpd (which takes its rules away) and starts it anew,
// with no mappings.
func (m *miniupnpd) restart() {
	m.l.t.Helper()
	m.proc.stop()
	m.start()
}

// rules is the router's DNAT rules that miniupnpd made.
func (m *miniupnpd) rules() string {
	out, _ := m.l.cmd(m.router, "nft", "list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd").CombinedOutput()
	return string(out)
}

// forwards reports whether the router forwards port to host's socket.
func (m *miniupnpd) forwards(port int, host string) error {
	if r := m.rules(); !strings.Contains(r, fmt.Sprintf("udp dport %d dnat ip to %s", port, host)) {
		return fmt.Errorf("no DNAT rule for UDP %d in:\n%s", port, r)
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
			l.waitPath(b, "direct")
			toDirect := time.Since(start)
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
