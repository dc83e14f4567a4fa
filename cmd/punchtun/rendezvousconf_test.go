//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

func TestKeyName(t *testing.T) {
	for flag, want := range map[string]string{
		"listen": "Listen", "listen-tcp": "ListenTCP", "key-file": "KeyFile", "relay": "Relay",
		"metrics": "Metrics", "log-level": "LogLevel", "log-format": "LogFormat", "max-peers": "MaxPeers",
		"turn": "TURN", "turn-secret-file": "TURNSecretFile", "turn-ttl": "TURNTTL",
	} {
		if got := keyName(flag); got != want {
			t.Errorf("keyName(%q) = %q, want %q", flag, got, want)
		}
	}
}

// metricsText fetches http://addr/metrics and returns the samples of the
// text format as "name{labels}" → value.
func metricsText(addr string) (map[string]float64, error) {
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", res.Status)
	}
	return parseSamples(res.Body)
}

// parseSamples parses the Prometheus text format into "name{labels}" →
// value, the labels sorted by name: name{a="x",b="y"}.
func parseSamples(r io.Reader) (map[string]float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64)
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			slices.Sort(labels)
			k := name
			if len(labels) > 0 {
				k += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[k] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[k] = m.GetGauge().GetValue()
			case m.Untyped != nil:
				out[k] = m.GetUntyped().GetValue()
			}
		}
	}
	return out, nil
}

// TestRendezvousConfigFile runs the rendezvous from a config file alone,
// and checks each key took effect: where it listens (UDP, no TCP), the
// key file, relaying off, JSON logs and metrics. Then flags override it.
func TestRendezvousConfigFile(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "state", "rendezvous.key")
	conf := filepath.Join(dir, "rendezvous.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`# test
[Rendezvous]
listen = 127.0.0.1:0
ListenTCP = off
KeyFile = %s
Relay = false     # relayed packets are dropped, and counted as such
Metrics = 127.0.0.1:0
LogLevel = debug
LogFormat = json
`, keyFile)), 0o644)

	logFile := startCommand(t, "rendezvous", "--config", conf)
	start := waitJSONLog(t, logFile, "rendezvous listening")
	metrics := waitJSONLog(t, logFile, "serving metrics")
	if start["relay"] != false {
		t.Errorf("relay %v with Relay = false", start["relay"])
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatalf("KeyFile: %v", err)
	}
	if k, err := key.ParsePrivate(strings.TrimSpace(string(b))); err != nil || start["public_key"] != k.Public().String() {
		t.Errorf("public key %v, key file %q", start["public_key"], b)
	}
	objs, _ := jsonLines(logFile)
	for _, o := range objs {
		if o["msg"] == "rendezvous listening for TCP" {
			t.Errorf("listens on TCP with ListenTCP = off: %v", o)
		}
	}

	// One STUN request and one relayed packet, which relaying off drops:
	// /metrics, served where Metrics says, counts both.
	udp, err := net.Dial("udp", start["addr"].(string))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	_, req := nat.NewBindingRequest()
	udp.Write(req)
	udp.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	if n, err := udp.Read(buf); err != nil || !nat.IsSTUN(buf[:n]) {
		t.Fatalf("no STUN answer: %v", err)
	}
	peer, _ := key.NewPrivate()
	udp.Write(wire.AppendRelay(nil, peer.Public(), []byte{4, 0, 0, 0, 1}))
	eventually(t, 10*time.Second, "metrics", func() error {
		m, err := metricsText(metrics["addr"].(string))
		if err != nil {
			return err
		}
		for name, want := range map[string]float64{
			"punchtun_rendezvous_registered_peers":                             0,
			"punchtun_rendezvous_stun_requests_total":                          1,
			`punchtun_rendezvous_dropped_packets_total{reason="relay_off"}`:    1,
			`punchtun_rendezvous_dropped_packets_total{reason="rate_limited"}`: 0,
		} {
			if got, ok := m[name]; !ok || got != want {
				return fmt.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
			}
		}
		if _, ok := m["go_goroutines"]; !ok {
			return fmt.Errorf("no Go runtime metrics")
		}
		return nil
	})

	// Flags win over the file: text logs, relaying on, no metrics.
	logFile = startCommand(t, "rendezvous", "--config", conf, "--log-format", "text", "--relay", "--metrics", "")
	eventually(t, 10*time.Second, "text log", func() error {
		b, _ := os.ReadFile(logFile)
		if !strings.Contains(string(b), `level=INFO msg="rendezvous listening" addr=127.0.0.1:`) || !strings.Contains(string(b), "relay=true") {
			return fmt.Errorf("log: %q", b)
		}
		if strings.Contains(string(b), "serving metrics") {
			t.Fatalf("serves metrics with --metrics '': %s", b)
		}
		return nil
	})
}

// TestRendezvousConfigErrors: a bad file exits 1 naming the file, the line
// and the key, before anything is created.
func TestRendezvousConfigErrors(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "never-created.key")
	for _, tc := range []struct{ name, file, want string }{
		{"bad bool", "[Rendezvous]\nKeyFile = " + keyFile + "\nRelay = maybe\n", `:3: Relay: invalid value "maybe": parse error`},
		{"bad format", "[Rendezvous]\n\nLogFormat = xml\n", `:3: LogFormat: invalid value "xml": want text or json`},
		{"bad level", "[Rendezvous]\nLogLevel = loud\n", `:2: LogLevel: invalid value "loud": `},
		{"bad number", "[Rendezvous]\nMaxPeers = lots\n", `:2: MaxPeers: invalid value "lots": parse error`},
		{"repeated", "[Rendezvous]\nKeyFile = a\nkeyfile = b\n", ":3: KeyFile: duplicate key; already set on line 2"},
		{"unknown", "[Rendezvous]\nListn = 0.0.0.0:3478\n", ":2: Listn: unknown key"},
		{"config in config", "[Rendezvous]\nConfig = other.conf\n", ":2: Config: unknown key"},
		{"peer config", "[Interface]\nListenPort = 51820\n", `:1: unknown section "[Interface]"; want [Rendezvous]`},
		{"no section", "Listen = 0.0.0.0:3478\n", ":1: Listen: key outside any section; add [Rendezvous] above it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".conf")
			os.WriteFile(conf, []byte(tc.file), 0o644)
			_, errOut, code := punchtun(t, "", "rendezvous", "--config", conf, "--listen", "127.0.0.1:0")
			if want := "punchtun rendezvous: " + conf + tc.want; code != 1 || !strings.HasPrefix(errOut, want) {
				t.Errorf("exit %d, stderr %q\nwant exit 1, %q", code, errOut, want)
			}
		})
	}
	if _, err := os.Stat(keyFile); err == nil {
		t.Error("a bad config created the key file")
	}
	missing := filepath.Join(dir, "missing.conf")
	if _, errOut, code := punchtun(t, "", "rendezvous", "--config", missing); code != 1 || !strings.Contains(errOut, missing+": no such file") {
		t.Errorf("missing file: exit %d, stderr %q", code, errOut)
	}
}

// TestRendezvousConfigExample checks configs/rendezvous.conf.example with
// every commented-out key line enabled: each key is one the rendezvous
// takes. Where it listens comes from the command line, which wins.
func TestRendezvousConfigExample(t *testing.T) {
	b, err := os.ReadFile("../../configs/rendezvous.conf.example")
	if err != nil {
		t.Fatal(err)
	}
	example := string(b)
	if !strings.Contains(example, "\nKeyFile = /var/lib/punchtun/rendezvous.key\n") {
		t.Error("the example's KeyFile is not in the unit's StateDirectory, /var/lib/punchtun")
	}
	all := regexp.MustCompile(`(?m)^# ([A-Z][A-Za-z]+ = )`).ReplaceAllString(example, "$1")
	conf := filepath.Join(t.TempDir(), "rendezvous.conf")
	os.WriteFile(conf, []byte(all), 0o644)
	logFile := startCommand(t, "rendezvous", "--config", conf, "--listen", "127.0.0.1:0", "--listen-tcp", "off",
		"--key-file", filepath.Join(t.TempDir(), "k"), "--metrics", "127.0.0.1:0")
	eventually(t, 10*time.Second, "example config runs", func() error {
		b, _ := os.ReadFile(logFile)
		if !strings.Contains(string(b), `msg="rendezvous listening"`) {
			return fmt.Errorf("log: %q", b)
		}
		return nil
	})
}
