package osnet

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseTable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Table
		err  string
	}{
		{"", TableMain, ""},
		{"auto", TableMain, ""},
		{"off", TableOff, ""},
		{"1234", 1234, ""},
		{"main", 254, ""}, // the kernel's own names, listed in a file or not
		{"local", 255, ""},
		{"0", 0, "Table = 0 is not a routing table"},
		{"no-such-table", 0, `no routing table named "no-such-table"`},
	} {
		got, err := ParseTable(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseTable(%q): %v, want an error saying %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseTable(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestLookupTableName(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rt_tables")
	os.WriteFile(file, []byte("# comment\n255\tlocal\n200 vpn # ours\n0x10 hex\nbad line here\n"), 0o644)
	for name, want := range map[string]int{"vpn": 200, "hex": 16, "local": 255} {
		if n, ok := lookupTableName(file, name); !ok || n != want {
			t.Errorf("%s: %d, %v; want %d", name, n, ok, want)
		}
	}
	if _, ok := lookupTableName(file, "here"); ok {
		t.Error("a line of three words was taken for a table")
	}
}

// TestResolvconfRecord: the interface's record is named under the first
// tunnel pattern of interface-order, and carries the resolvers and search
// domains as resolv.conf lines.
func TestResolvconfRecord(t *testing.T) {
	order := filepath.Join(t.TempDir(), "interface-order")
	os.WriteFile(order, []byte("lo.inet*\n# tunnels\ntun*\ntap*\n"), 0o644)
	if got := resolvconfPrefix(order); got != "tun." {
		t.Errorf("prefix %q, want tun.", got)
	}
	if got := resolvconfPrefix(filepath.Join(t.TempDir(), "missing")); got != "" {
		t.Errorf("prefix %q without an order file, want none", got)
	}
	got := string(resolvConf([]netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd00::1")}, []string{"punch", "corp"}))
	if want := "nameserver 100.64.0.1\nnameserver fd00::1\nsearch punch corp\n"; got != want {
		t.Errorf("record %q, want %q", got, want)
	}
}

// TestRunHooks: each line runs through bash with %i replaced, in order;
// the first that fails stops the rest and names itself.
func TestRunHooks(t *testing.T) {
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("no bash here")
	}
	out := filepath.Join(t.TempDir(), "out")
	log := slog.New(slog.DiscardHandler)
	lines := []string{"echo one %i >> " + out, "echo two %i >> " + out}
	if err := RunHooks(log, "PostUp", "pt7", lines); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "one pt7\ntwo pt7\n" {
		t.Fatalf("hooks wrote %q", b)
	}
	err := RunHooks(log, "PreUp", "pt7", []string{"false", "echo never >> " + out})
	if err == nil || !strings.Contains(err.Error(), `PreUp "false"`) {
		t.Fatalf("a failing hook: %v, want an error naming it", err)
	}
	if b, _ := os.ReadFile(out); strings.Contains(string(b), "never") {
		t.Fatal("a hook after a failing one ran")
	}
}
