//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// startCommand runs the binary in the background with its stderr in a
// file, and returns the file's path. The process is killed when the test
// ends; its log is shown if the test failed.
func startCommand(t *testing.T, args ...string) string {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "stderr")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command(punchtunBinary(t), args...)
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Process.Kill()
		c.Wait()
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("--- punchtun %s:\n%s", strings.Join(args, " "), b)
		}
	})
	return logFile
}

// jsonLines parses every line of a log file as a JSON object; a line that
// is not one is an error.
func jsonLines(logFile string) ([]map[string]any, error) {
	b, err := os.ReadFile(logFile)
	if err != nil {
		return nil, err
	}
	var objs []map[string]any
	for line := range strings.Lines(string(b)) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return nil, fmt.Errorf("log line %q is not a JSON object: %v", line, err)
		}
		objs = append(objs, m)
	}
	return objs, nil
}

// waitJSONLog waits until the JSON log has a line with msg, and returns it.
func waitJSONLog(t *testing.T, logFile, msg string) map[string]any {
	t.Helper()
	var found map[string]any
	eventually(t, 10*time.Second, "log "+msg, func() error {
		objs, err := jsonLines(logFile)
		if err != nil {
			t.Fatal(err) // a line that is not JSON never becomes one
		}
		for _, o := range objs {
			if o["msg"] == msg {
				found = o
				return nil
			}
		}
		return fmt.Errorf("%d lines, none with msg %q", len(objs), msg)
	})
	return found
}

// TestLogFormatJSON runs the rendezvous with --log-format json: every
// line on stderr is a JSON object, and the start line carries the public
// key and the listening address as strings.
func TestLogFormatJSON(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "rendezvous.key")
	logFile := startCommand(t, "rendezvous", "--listen", "127.0.0.1:0", "--listen-tcp", "off", "--key-file", keyFile, "--log-format", "json")
	line := waitJSONLog(t, logFile, "rendezvous listening")
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	k, err := key.ParsePrivate(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if line["public_key"] != k.Public().String() {
		t.Errorf("public_key %v, want %s", line["public_key"], k.Public())
	}
	if line["level"] != "INFO" || line["time"] == nil {
		t.Errorf("level %v, time %v", line["level"], line["time"])
	}
	// An address is logged as "127.0.0.1:port", as the text format does,
	// not as the JSON of a *net.UDPAddr.
	addr, _ := line["addr"].(string)
	if ap, err := netip.ParseAddrPort(addr); err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") || ap.Port() == 0 {
		t.Errorf("addr %#v, want 127.0.0.1:PORT", line["addr"])
	}
}

// TestLogFormatFlag: text stays the default, and a format other than text
// or json is a usage error for every command that logs.
func TestLogFormatFlag(t *testing.T) {
	for _, cmd := range []string{"rendezvous", "up"} {
		_, errOut, code := punchtun(t, "", cmd, "--log-format", "xml", "x.conf")
		if code != 2 || !strings.Contains(errOut, `invalid value "xml" for flag -log-format: want text or json`) {
			t.Errorf("%s --log-format xml: exit %d, stderr %q", cmd, code, errOut)
		}
		out, errOut, _ := punchtun(t, "", cmd, "--help")
		if !strings.Contains(out+errOut, "-log-format format") || !strings.Contains(out+errOut, "(default text)") {
			t.Errorf("%s --help does not show --log-format:\n%s", cmd, out+errOut)
		}
	}
	logFile := startCommand(t, "rendezvous", "--listen", "127.0.0.1:0", "--listen-tcp", "off", "--key-file", filepath.Join(t.TempDir(), "k"))
	eventually(t, 10*time.Second, "text log", func() error {
		b, _ := os.ReadFile(logFile)
		if !strings.Contains(string(b), `level=INFO msg="rendezvous listening" addr=127.0.0.1:`) {
			return fmt.Errorf("log: %q", b)
		}
		return nil
	})
}
