package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// memberCert signs alice's certificate in a new network.
func memberCert(t *testing.T, member string, addrs ...string) (cert.NetworkPrivate, *cert.Cert) {
	t.Helper()
	nk, err := cert.NewNetworkPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return nk, signMember(t, nk, member, addrs...)
}

// signMember signs a certificate of network nk for the private key member.
func signMember(t *testing.T, nk cert.NetworkPrivate, member string, addrs ...string) *cert.Cert {
	t.Helper()
	priv, err := key.ParsePrivate(member)
	if err != nil {
		t.Fatal(err)
	}
	tpl := cert.Template{Member: priv.Public(), Name: "alice", NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	for _, a := range addrs {
		tpl.Addresses = append(tpl.Addresses, netip.MustParsePrefix(a))
	}
	c, err := cert.Sign(nk, tpl)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const memberHead = "[Interface]\nPrivateKey = {alice}\nRendezvous = 203.0.113.10:3478\nRendezvousKey = {rv}\n"

func TestNetworkMember(t *testing.T) {
	nk, c := memberCert(t, alicePriv, "100.64.0.1/24", "fd00::1/64")
	conf := expand(memberHead) + "Network = " + nk.Public().String() + "\nCertificate = " + c.Text() + "\n"
	cfg, err := Parse("m.conf", strings.NewReader(conf))
	if err != nil {
		t.Fatal(err)
	}
	in := cfg.Interface
	// Address and Name come from the certificate; the prefixes are routed.
	if len(in.Addresses) != 2 || in.Addresses[0].String() != "100.64.0.1/24" || in.Name != "alice" {
		t.Errorf("addresses %v name %q", in.Addresses, in.Name)
	}
	if got := in.NetworkPrefixes(); len(got) != 2 || got[0].String() != "100.64.0.0/24" || got[1].String() != "fd00::/64" {
		t.Errorf("network prefixes %v", got)
	}

	// From a file, relative to the config's directory; Address may repeat
	// one of the certificate's, Name may differ.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "alice.cert"), []byte(c.Text()+"\n"), 0o644)
	conf = expand(memberHead) + "Address = 100.64.0.1/32\nName = laptop\nNetwork = " + nk.Public().String() + "\nCertificateFile = alice.cert\n"
	path := filepath.Join(dir, "m.conf")
	os.WriteFile(path, []byte(conf), 0o600)
	cfg, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if in := cfg.Interface; len(in.Addresses) != 1 || in.Addresses[0].String() != "100.64.0.1/32" || in.Name != "laptop" || in.Certificate == nil {
		t.Errorf("from a file: addresses %v name %q", in.Addresses, in.Name)
	}
}

func TestNetworkErrors(t *testing.T) {
	nk, c := memberCert(t, alicePriv, "100.64.0.1/24")
	net := "Network = " + nk.Public().String() + "\n"
	crt := "Certificate = " + c.Text() + "\n"
	for _, tc := range []struct {
		name, conf string
		line       int
		key, msg   string
	}{
		{"certificate without network", memberHead + crt, 5, "Certificate", "needs Network"},
		{"network without certificate", memberHead + net, 5, "Network", "needs this member's Certificate"},
		{"address not in it", memberHead + "Address = 100.64.0.9/24\n" + net + crt, 5, "Address", "100.64.0.9 is not in this member's certificate"},
		{"no rendezvous", "[Interface]\nPrivateKey = {alice}\n" + net + crt, 3, "Network", "through a rendezvous"},
		{"not a certificate", memberHead + net + "Certificate = AAAA\n", 6, "Certificate", "certificate"},
		{"bad network key", memberHead + "Network = nope\n", 5, "Network", "must be 44"},
		{"both", memberHead + net + crt + "CertificateFile = x.cert\n", 7, "CertificateFile", "not both"},
		{"missing file", memberHead + net + "CertificateFile = /nonexistent/x.cert\n", 6, "CertificateFile", "no such file"},
	} {
		_, err := Parse("m.conf", strings.NewReader(expand(tc.conf)))
		e, ok := err.(*Error)
		if !ok || e.Line != tc.line || e.Key != tc.key || !strings.Contains(e.Msg, tc.msg) {
			t.Errorf("%s: got %v, want m.conf:%d: %s: …%s…", tc.name, err, tc.line, tc.key, tc.msg)
		}
	}
}

// TestCertificateProblem: what the rendezvous will refuse comes up, with
// the reason, instead of failing the config.
func TestCertificateProblem(t *testing.T) {
	nk, c := memberCert(t, alicePriv, "100.64.0.1/24")
	other, _ := memberCert(t, alicePriv, "100.64.0.1/24")
	bobs := signMember(t, nk, "oK56DE9Ue9zK76rAc8pBl6opph+1v36lm7cXXsQKrQM=", "100.64.0.1/24")
	for _, tc := range []struct {
		name    string
		network cert.NetworkKey
		c       *cert.Cert
		at      time.Time
		want    cert.Reason
	}{
		{"valid", nk.Public(), c, time.Now(), 0},
		{"another network's", other.Public(), c, time.Now(), cert.OtherNetwork},
		{"another key's", nk.Public(), bobs, time.Now(), cert.KeyMismatch},
		{"expired", nk.Public(), c, time.Now().Add(2 * time.Hour), cert.Expired},
	} {
		conf := expand(memberHead) + "Network = " + tc.network.String() + "\nCertificate = " + tc.c.Text() + "\n"
		cfg, err := Parse("m.conf", strings.NewReader(conf))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = cfg.Interface.CertificateProblem(tc.at)
		if tc.want == 0 && err != nil || tc.want != 0 && cert.ReasonOf(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestPolicyFile: Policy = names a file of the network's documents, read
// relative to the config; a line that is no document, one of another
// network, an empty file or a policy without a network are errors naming
// the line.
func TestPolicyFile(t *testing.T) {
	nk, c := memberCert(t, alicePriv, "100.64.0.1/24")
	other, _ := cert.NewNetworkPrivate()
	dir := t.TempDir()
	write := func(name string, docs ...*cert.Document) string {
		var b strings.Builder
		b.WriteString("# the network's policy\n\n")
		for _, d := range docs {
			b.WriteString(d.Text() + "\n")
		}
		os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644)
		return name
	}
	pol, _ := cert.SignPolicy(nk, 1, nil)
	rev, _ := cert.SignRevocation(nk, 2, []key.Key{{1}})
	foreign, _ := cert.SignPolicy(other, 1, nil)
	head := memberHead + "Network = " + nk.Public().String() + "\nCertificate = " + c.Text() + "\n"
	cfg, err := Parse(filepath.Join(dir, "m.conf"), strings.NewReader(expand(head+"Policy = "+write("ok.txt", pol, rev)+"\n")))
	if err != nil || len(cfg.Interface.Documents) != 2 {
		t.Fatalf("Policy = a file of two documents: %v, %d", err, len(cfg.Interface.Documents))
	}
	os.WriteFile(filepath.Join(dir, "junk.txt"), []byte("\nnot a document\n"), 0o644)
	for _, tc := range []struct{ name, conf, key, msg string }{
		{"another network's", head + "Policy = " + write("foreign.txt", foreign) + "\n", "Policy", "signed by network"},
		{"junk", head + "Policy = junk.txt\n", "Policy", "junk.txt:2: document"},
		{"empty", head + "Policy = " + write("empty.txt") + "\n", "Policy", "no policy or revocation"},
		{"missing", head + "Policy = nope.txt\n", "Policy", "no such file"},
		{"no network", memberHead + "Address = 10.0.0.1/24\nPolicy = " + write("p.txt", pol) + "\n", "Policy", "a policy is a network's"},
	} {
		_, err := Parse(filepath.Join(dir, "m.conf"), strings.NewReader(expand(tc.conf)))
		e, ok := err.(*Error)
		if !ok || e.Key != tc.key || e.Line == 0 || !strings.Contains(e.Msg, tc.msg) {
			t.Errorf("%s: got %v, want Policy: …%s…", tc.name, err, tc.msg)
		}
	}
}
