//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// The owner's revocation tools: keys and certificates in one revocation,
// a cumulative list from earlier ones in pieces, show of all of them, and
// a policy's seq far in the future refused.
func TestNetworkRevokeCommands(t *testing.T) {
	dir := t.TempDir()
	priv, _, _ := punchtun(t, "", "network", "new")
	nk, _ := cert.ParseNetworkPrivate(strings.TrimSpace(priv))
	keyFile := filepath.Join(dir, "net.key")
	os.WriteFile(keyFile, []byte(priv), 0o600)
	m, _ := key.NewPrivate()
	old, _ := cert.Sign(nk, cert.Template{Member: m.Public(), Name: "m1", Groups: []string{"admins"},
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/24")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)})
	certFile := filepath.Join(dir, "old.cert")
	os.WriteFile(certFile, []byte(old.Text()+"\n"), 0o644)
	other, _ := key.NewPrivate()

	out, errOut, code := punchtun(t, "", "network", "revoke", "--key", keyFile, "--cert", certFile, other.Public().String())
	if code != 0 {
		t.Fatalf("revoke --cert: %s", errOut)
	}
	d, err := cert.ParseDocumentText(out)
	if err != nil || len(d.Retired) != 1 || d.Retired[0] != cert.RetiredOf(old) || len(d.Revoked) != 1 || d.Revoked[0] != other.Public() {
		t.Fatalf("revoke --cert printed %q: %v", out, err)
	}
	first := filepath.Join(dir, "first.rev")
	os.WriteFile(first, []byte(out), 0o644)
	show, _, code := punchtun(t, "", "network", "show", first)
	if code != 0 || !strings.Contains(show, "retired:") || !strings.Contains(show, old.Fingerprint()) {
		t.Errorf("show of a retirement:\n%s", show)
	}

	// 100 more keys with --from: one list of all, in pieces, each of
	// which fits a document; the pieces cover the first revocation.
	args := []string{"network", "revoke", "--key", keyFile, "--from", first, "--seq", fmt.Sprint(time.Now().Unix() + 1)}
	var more []key.Key
	for range 100 {
		p, _ := key.NewPrivate()
		more = append(more, p.Public())
		args = append(args, p.Public().String())
	}
	out, errOut, code = punchtun(t, "", args...)
	if code != 0 {
		t.Fatalf("revoke --from: %s", errOut)
	}
	lines := strings.Fields(out)
	h := cert.NewHoldings(nk.Public())
	h.Add(d)
	for _, l := range lines {
		p, err := cert.ParseDocumentText(l)
		if err != nil {
			t.Fatal(err)
		}
		h.Add(p)
	}
	if len(lines) < 3 || h.Len() != len(lines) || h.RevokedKeys() != 101 || h.Refuses(old) == nil {
		t.Fatalf("--from: %d pieces, %d held, %d keys revoked", len(lines), h.Len(), h.RevokedKeys())
	}
	list := filepath.Join(dir, "list.rev")
	os.WriteFile(list, []byte(out), 0o644)
	if show, _, code := punchtun(t, "", "network", "show", list); code != 0 || strings.Count(show, "revoked:") != 101 {
		t.Errorf("show of the list: exit %d, %d keys", code, strings.Count(show, "revoked:"))
	}
	if _, errOut, code := punchtun(t, "", "network", "revoke", "--key", keyFile, "--from", list, "--seq", "5", more[0].String()); code == 0 || !strings.Contains(errOut, "--seq must be higher") {
		t.Errorf("--from with a lower seq: exit %d, %q", code, errOut)
	}
	if _, errOut, code := punchtun(t, "", "network", "revoke", "--key", keyFile); code == 0 || !strings.Contains(errOut, "MEMBERKEY or a --cert") {
		t.Errorf("revoke of nothing: exit %d, %q", code, errOut)
	}

	rules := filepath.Join(dir, "rules.ini")
	os.WriteFile(rules, []byte("[Rule]\nFrom = *\nTo = *\nAllow = any\n"), 0o644)
	far := fmt.Sprint(time.Now().Add(2 * 365 * 24 * time.Hour).Unix())
	if _, errOut, code := punchtun(t, "", "network", "policy", "--key", keyFile, "--seq", far, rules); code == 0 || !strings.Contains(errOut, "more than a year ahead") {
		t.Errorf("a seq two years ahead: exit %d, %q", code, errOut)
	}
	if _, errOut, code := punchtun(t, "", "network", "policy", "--key", keyFile, "--seq", "18446744073709551615", rules); code == 0 {
		t.Errorf("seq 2^64-1 signed: %q", errOut)
	}
	if _, errOut, code := punchtun(t, "", "network", "policy", "--key", keyFile, "--seq", far, "--future", rules); code != 0 {
		t.Errorf("--future: %s", errOut)
	}
}
