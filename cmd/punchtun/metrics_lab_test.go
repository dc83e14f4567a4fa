//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// scrapeIn fetches /metrics from addr inside a lab host, where the test
// process cannot connect, with socat (which CI installs), and parses it.
func (l *lab) scrapeIn(host, addr string) (map[string]float64, error) {
	out, err := l.cmd(host, "sh", "-c", `printf 'GET /metrics HTTP/1.0\r\n\r\n' | socat -t 5 - TCP:`+addr).Output()
	if err != nil {
		return nil, fmt.Errorf("socat: %v", err)
	}
	head, body, ok := strings.Cut(string(out), "\r\n\r\n")
	if !ok || !strings.HasPrefix(head, "HTTP/1.0 200 ") && !strings.HasPrefix(head, "HTTP/1.1 200 ") {
		return nil, fmt.Errorf("response %q", out)
	}
	return parseSamples(strings.NewReader(body))
}

// TestPeerMetrics brings up a pair in the lab, one side with --metrics
// and JSON logs, and checks what its /metrics says over HTTP against
// `punchtun status`: the path, the handshake, the bytes, the NAT and the
// registration. A second tunnel asking for the same metrics address fails
// before it creates its interface.
func TestPeerMetrics(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptm", "easy", "easy")
	rvKey := l.startRendezvous()
	a := newPeer(t, "a1", "ptm0a", "100.64.0.1")
	b := newPeer(t, "b1", "ptm0b", "100.64.0.2")
	const metricsAddr = "127.0.0.1:9101"
	pa := l.start(a.host, a.iface, l.bin, "up", l.writeConfig(a, b, rvKey), "--run-dir", filepath.Join(l.dir, "run-"+a.iface), "--state-dir", "-",
		"--metrics", metricsAddr, "--log-format", "json")
	eventually(t, 10*time.Second, a.iface+" up", func() error {
		_, err := l.status(a)
		return err
	})
	l.up(b, a, rvKey)
	l.waitPath(a, "direct")
	l.ping(a, b)

	peer := fmt.Sprintf(`interface="%s",name="%s",public_key="%s"`, a.iface, b.host, b.priv.Public())
	eventually(t, 15*time.Second, "metrics agree with status", func() error {
		st, err := l.status(a)
		if err != nil {
			return err
		}
		m, err := l.scrapeIn(a.host, metricsAddr)
		if err != nil {
			return err
		}
		p := st.Peers[0]
		hs, err := time.Parse(time.RFC3339, p.LastHandshake)
		if err != nil {
			return fmt.Errorf("status: no handshake yet")
		}
		for name, want := range map[string]float64{
			`punchtun_interface_up{interface="` + a.iface + `"}`:                                                                  1,
			fmt.Sprintf(`punchtun_interface_nat_mapping{interface=%q,mapping=%q}`, a.iface, st.NAT):                               1,
			fmt.Sprintf(`punchtun_interface_rendezvous_registered{interface=%q,rendezvous=%q}`, a.iface, rendezvousAddr):          1,
			fmt.Sprintf(`punchtun_peer_path{interface=%q,name=%q,path="direct",public_key=%q}`, a.iface, b.host, b.priv.Public()): 1,
		} {
			if got, ok := m[name]; !ok || got != want {
				return fmt.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
			}
		}
		// Scraped after status: the counters are at least what it showed.
		for name, min := range map[string]float64{
			"punchtun_peer_receive_bytes_total":    float64(p.RxBytes),
			"punchtun_peer_transmit_bytes_total":   float64(p.TxBytes),
			"punchtun_peer_last_handshake_seconds": float64(hs.Unix()),
		} {
			got, ok := m[name+"{"+peer+"}"]
			if !ok || got < min || got == 0 {
				return fmt.Errorf("%s = %v (present %v), want at least %v and not 0", name, got, ok, min)
			}
		}
		if rtt := m["punchtun_peer_rtt_seconds{"+peer+"}"]; rtt <= 0 || rtt > 1 {
			return fmt.Errorf("rtt %v s on a direct lab path", rtt)
		}
		return nil
	})

	// Every log line of the peer is JSON, and says where metrics are.
	if err := pa.stop(); err != nil {
		t.Errorf("%s exited with %v after SIGTERM", a.iface, err)
	}
	objs, err := jsonLines(pa.log)
	if err != nil {
		t.Fatal(err)
	}
	var serving bool
	for _, o := range objs {
		serving = serving || o["msg"] == "serving metrics" && o["addr"] == metricsAddr
	}
	if !serving {
		t.Errorf("no \"serving metrics\" line with addr %s in %d log lines", metricsAddr, len(objs))
	}

	// The metrics address is taken by another process: up fails and
	// creates nothing.
	busy := l.start(a.host, "socat-9101", "socat", "TCP-LISTEN:9101,bind=127.0.0.1,reuseaddr,fork", "SYSTEM:true")
	eventually(t, 10*time.Second, "socat listening", func() error {
		out, _ := l.cmd(a.host, "ss", "-Hltn", "sport = :9101").Output()
		if !strings.Contains(string(out), "9101") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	c := newPeer(t, "a1", "ptm1a", "100.64.0.3")
	out, err := l.cmd(c.host, l.bin, "up", l.writeConfig(c, b, rvKey), "--run-dir", filepath.Join(l.dir, "run-"+c.iface), "--state-dir", "-", "--metrics", metricsAddr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--metrics "+metricsAddr+": ") {
		t.Errorf("up with a busy metrics address: %v, %s", err, out)
	}
	if err := l.cmd(c.host, "ip", "link", "show", c.iface).Run(); err == nil {
		t.Errorf("%s exists after up failed", c.iface)
	}
	busy.stop()
}
