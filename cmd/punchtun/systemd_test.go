//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/punchtun/punchtun/tunnel"
)

// installedBinary is where the units expect punchtun; the README's install
// steps put it there.
const installedBinary = "/usr/local/bin/punchtun"

// copyUnits copies the systemd units of configs/ into a temporary directory,
// with ExecStart and ExecReload pointing at the binary under test: systemd-analyze verify
// checks that the command exists, so this verifies the units as they would
// run.
func copyUnits(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := punchtunBinary(t)
	for _, name := range []string{"punchtun@.service", "punchtun-rendezvous.service"} {
		b, err := os.ReadFile(filepath.Join("../../configs", name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "\nExecStart="+installedBinary+" ") {
			t.Fatalf("%s: ExecStart does not run %s", name, installedBinary)
		}
		for _, exec := range []string{"ExecStart=", "ExecReload="} {
			b = []byte(strings.ReplaceAll(string(b), exec+installedBinary+" ", exec+bin+" "))
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestSystemdUnits runs systemd-analyze verify on both units, the template
// as the instance punchtun@punch0 (what `systemctl enable --now
// punchtun@punch0` starts); any warning about them fails the test. It
// also checks that systemd rates their hardening OK.
func TestSystemdUnits(t *testing.T) {
	requireTools(t, "systemd", "systemd-analyze")
	dir := copyUnits(t)
	for _, unit := range []string{"punchtun@punch0.service", "punchtun-rendezvous.service"} {
		t.Run(unit, func(t *testing.T) {
			c := exec.Command("systemd-analyze", "verify", "--man=no", unit)
			c.Dir = dir
			out, err := c.CombinedOutput()
			if err != nil {
				t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
			}
			// verify exits 0 after warnings such as an unknown key; it
			// prints nothing for a clean unit. Other units (targets it
			// pulls in) are the system's business.
			for line := range strings.Lines(string(out)) {
				if strings.Contains(line, "punchtun") {
					t.Errorf("systemd-analyze verify %s: %s", unit, strings.TrimSpace(line))
				}
			}

			c = exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", unit)
			c.Dir = dir
			out, err = c.CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze security %s: %v\n%s", unit, err, out)
			}
			m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\w+)`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("systemd-analyze security %s: no exposure level in\n%s", unit, out)
			}
			if level := string(m[2]); level != "OK" && level != "SAFE" {
				t.Errorf("%s: exposure %s %s, want OK or SAFE:\n%s", unit, m[1], level, out)
			}
		})
	}
}

// TestSystemdUnitsMatchPunchtun checks the commands the units run and the
// directories and capabilities they give punchtun against what it uses.
func TestSystemdUnitsMatchPunchtun(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("../../configs", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	peer, rv := read("punchtun@.service"), read("punchtun-rendezvous.service")
	for _, want := range []string{
		"ExecStart=" + installedBinary + " up --state-dir /var/lib/punchtun-peer /etc/punchtun/%i.conf\n",
		// Writable, so that restarts find the peers (not the rendezvous's
		// directory, which DynamicUser= owns).
		"StateDirectory=punchtun-peer\n",
		"ExecReload=" + installedBinary + " syncconf %i\n",
		"Type=simple\n", "Restart=on-failure\n", "NoNewPrivileges=yes\n",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE\n",
		"DeviceAllow=/dev/net/tun rw\n",
		// The status socket's directory and WireGuard's UAPI directory,
		// kept while other instances run.
		"RuntimeDirectory=punchtun wireguard\n", "RuntimeDirectoryPreserve=yes\n",
	} {
		if !strings.Contains(peer, want) {
			t.Errorf("punchtun@.service lacks %q", want)
		}
	}
	// /var/run is /run; RuntimeDirectory= is relative to /run.
	if tunnel.DefaultRunDir != "/var/run/punchtun" {
		t.Errorf("the status sockets are in %s, not in RuntimeDirectory=punchtun", tunnel.DefaultRunDir)
	}
	for _, want := range []string{
		"ExecStart=" + installedBinary + " rendezvous --config /etc/punchtun/rendezvous.conf\n",
		"Type=simple\n", "Restart=on-failure\n", "NoNewPrivileges=yes\n", "DynamicUser=yes\n",
		"StateDirectory=punchtun\n",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n",
	} {
		if !strings.Contains(rv, want) {
			t.Errorf("punchtun-rendezvous.service lacks %q", want)
		}
	}
}
