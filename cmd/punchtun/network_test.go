//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// TestNetworkCommands drives `punchtun network` through its contract:
// new and pub as genkey and pubkey, sign with repeated flags on either
// side of MEMBERKEY, show of text or file, --network's verdicts.
func TestNetworkCommands(t *testing.T) {
	dir := t.TempDir()
	priv, _, code := punchtun(t, "", "network", "new")
	if code != 0 {
		t.Fatal("network new failed")
	}
	nk, err := cert.ParseNetworkPrivate(strings.TrimSpace(priv))
	if err != nil || strings.Count(priv, "\n") != 1 {
		t.Fatalf("network new printed %q: %v", priv, err)
	}
	pub, _, code := punchtun(t, priv, "network", "pub")
	if code != 0 || strings.TrimSpace(pub) != nk.Public().String() {
		t.Fatalf("network pub printed %q, want %s", pub, nk.Public())
	}
	netpub := strings.TrimSpace(pub)
	keyFile := filepath.Join(dir, "net.key")
	os.WriteFile(keyFile, []byte(priv), 0o600)

	memberPriv, _ := key.NewPrivate()
	member := memberPriv.Public().String()
	out, errOut, code := punchtun(t, "", "network", "sign", "--key", keyFile, "--name", "m7",
		"--address", "fd00::7/64", member, "--address", "100.64.0.7/24", "--group", "servers", "--group", "laptops", "--valid", "30d")
	if code != 0 || errOut != "" || strings.Count(out, "\n") != 1 {
		t.Fatalf("sign: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	c, err := cert.ParseText(out)
	if err != nil {
		t.Fatal(err)
	}
	if c.Member.String() != member || c.Network != nk.Public() || c.Name != "m7" || len(c.Addresses) != 2 || len(c.Groups) != 2 {
		t.Errorf("signed %+v", c)
	}
	if left := time.Until(c.NotAfter); left < 29*24*time.Hour || left > 30*24*time.Hour {
		t.Errorf("--valid 30d: valid for %v", left)
	}
	certFile := filepath.Join(dir, "m7.cert")
	os.WriteFile(certFile, []byte(out), 0o644)

	for _, args := range [][]string{
		{"network", "show", strings.TrimSpace(out)},
		{"network", "show", certFile, "--network", netpub},
		{"network", "show", "--network", netpub, certFile},
	} {
		shown, errOut, code := punchtun(t, "", args...)
		if code != 0 {
			t.Errorf("%v: exit %d: %s", args, code, errOut)
		}
		for _, want := range []string{"name:        m7", "100.64.0.7/24, fd00::7/64", "laptops, servers", member, netpub, c.Fingerprint()} {
			if !strings.Contains(shown, want) {
				t.Errorf("%v: output lacks %q:\n%s", args, want, shown)
			}
		}
	}

	other, _, _ := punchtun(t, "", "network", "new")
	otherPub, _, _ := punchtun(t, other, "network", "pub")
	if _, errOut, code := punchtun(t, "", "network", "show", "--network", strings.TrimSpace(otherPub), certFile); code != 1 || !strings.Contains(errOut, "other-network") {
		t.Errorf("show with another network: exit %d, stderr %q", code, errOut)
	}
	expired, _, _ := punchtun(t, "", "network", "sign", "--key", keyFile, "--name", "m8", "--address", "100.64.0.8/24", "--valid", "1s", member)
	eventually(t, 5*time.Second, "the 1-s certificate expires", func() error {
		_, errOut, code := punchtun(t, "", "network", "show", "--network", netpub, strings.TrimSpace(expired))
		if code != 1 || !strings.Contains(errOut, "expired") {
			return fmt.Errorf("exit %d, stderr %q", code, errOut)
		}
		return nil
	})

	// Bad input: each a clear error, exit 1, nothing on stdout.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "M7", "--address", "100.64.0.7/24", member}, "only a-z"},
		{[]string{"--name", "m7", "--address", "100.64.0.7", member}, "prefix length"},
		{[]string{"--name", "m7", "--address", "100.64.0.7/24", "not-a-key"}, "MEMBERKEY"},
		{[]string{"--name", "m7", "--address", "100.64.0.7/24", "--valid", "soon", member}, "--valid"},
		{[]string{"--name", "m7", member}, "required"},
	} {
		args := append([]string{"network", "sign", "--key", keyFile}, tc.args...)
		out, errOut, code := punchtun(t, "", args...)
		if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q (want %q)", tc.args, code, out, errOut, tc.want)
		}
	}

	// A key file others can read is warned about, as wg does.
	os.Chmod(keyFile, 0o644)
	if _, errOut, code := punchtun(t, "", "network", "sign", "--key", keyFile, "--name", "m9", "--address", "100.64.0.9/24", member); code != 0 || !strings.Contains(errOut, "world accessible") {
		t.Errorf("readable key file: exit %d, stderr %q", code, errOut)
	}
}

// A member re-signed at once, with a group fewer, gets a certificate that
// supersedes the first: not the same second's not-before, which would
// leave the two equals and the member free to present either.
func TestResignedAtOnceSupersedes(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	keyFile := filepath.Join(t.TempDir(), "net.key")
	os.WriteFile(keyFile, []byte(nk.Encode()+"\n"), 0o600)
	memberPriv, _ := key.NewPrivate()
	sign := func(extra ...string) *cert.Cert {
		args := append([]string{"network", "sign", "--key", keyFile, "--name", "m1", "--address", "100.64.0.1/24"}, extra...)
		out, errOut, code := punchtun(t, "", append(args, memberPriv.Public().String())...)
		if code != 0 {
			t.Fatalf("sign: %s", errOut)
		}
		c, err := cert.ParseText(out)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := sign("--group", "admins")
	second := sign()
	if !second.NotBefore.After(first.NotBefore) {
		t.Fatalf("signed one after the other, both valid from %v", first.NotBefore)
	}
	seen := cert.NewNewest(nk.Public())
	if err := seen.See(second, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := seen.See(first, time.Now()); cert.ReasonOf(err) != cert.Superseded {
		t.Errorf("the first certificate, after the second was seen: %v, want superseded", err)
	}
}
