package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// A network's member: [Interface] names the network's public key
// (Network) and holds this machine's certificate (Certificate, or a file
// of it in CertificateFile). The certificate's addresses are then the
// interface's (Address may be left out, and may only repeat them), and
// its name the interface's Name unless one is given.

func setNetwork(in *Interface, v string) error {
	k, err := cert.ParseNetworkKey(v)
	in.Network = k
	return err
}

func setCertificate(in *Interface, v string) error {
	c, err := cert.ParseText(v)
	in.Certificate = c
	return err
}

func setCertificateFile(in *Interface, v string) error {
	in.CertificateFile = v
	return nil
}

// loadCertificateFile reads CertificateFile, relative to the config's
// directory, into Certificate.
func (c *Config) loadCertificateFile(file string, pos *positions) error {
	in := &c.Interface
	if in.CertificateFile == "" {
		return nil
	}
	if in.Certificate != nil {
		return &Error{File: file, Line: pos.ifaceLine("CertificateFile"), Key: "CertificateFile", Msg: "give Certificate or CertificateFile, not both"}
	}
	path, b, err := readBeside(file, pos, "CertificateFile", in.CertificateFile)
	if err != nil {
		return err
	}
	if in.Certificate, err = cert.ParseText(string(b)); err != nil {
		return &Error{File: file, Line: pos.ifaceLine("CertificateFile"), Key: "CertificateFile", Msg: fmt.Sprintf("%s: %v", path, err)}
	}
	return nil
}

// readBeside reads the file that key k names, relative to the config's
// directory; it returns the path read.
func readBeside(file string, pos *positions, k, name string) (string, []byte, error) {
	path := name
	if !filepath.IsAbs(path) && file != "" {
		path = filepath.Join(filepath.Dir(file), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return path, nil, &Error{File: file, Line: pos.ifaceLine(k), Key: k, Msg: err.Error()}
	}
	return path, b, nil
}

// loadPolicy reads the documents of the Policy file: each line one's
// text, blank lines and '#' comments skipped. Errors name the file's
// line; that they are the config's Network's is validateNetwork's.
func (c *Config) loadPolicy(file string, pos *positions) error {
	in := &c.Interface
	if in.Policy == "" {
		return nil
	}
	path, b, err := readBeside(file, pos, "Policy", in.Policy)
	if err != nil {
		return err
	}
	for i, line := range fileLines(b) {
		line, _, _ = strings.Cut(line, "#")
		if strings.TrimSpace(line) == "" {
			continue
		}
		d, err := cert.ParseDocumentText(line)
		if err != nil {
			return &Error{File: file, Line: pos.ifaceLine("Policy"), Key: "Policy", Msg: fmt.Sprintf("%s:%d: %v", path, i+1, err)}
		}
		in.Documents = append(in.Documents, d)
	}
	if len(in.Documents) == 0 {
		return &Error{File: file, Line: pos.ifaceLine("Policy"), Key: "Policy", Msg: path + ": no policy or revocation in it"}
	}
	return nil
}

// validateNetwork checks the membership keys against Address, and fills
// in Address and Name from the certificate. A certificate that the
// rendezvous and the other members will refuse — another network's,
// another key's, expired or not yet valid — is no error here: the
// interface still comes up for its static peers, and warns
// (CertificateProblem); the rendezvous says why it refuses.
func (c *Config) validateNetwork(file string, pos *positions) error {
	in := &c.Interface
	errAt := func(k, format string, args ...any) error {
		return &Error{File: file, Line: pos.ifaceLine(k), Key: k, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case in.Network.IsZero() && in.Certificate == nil && in.Policy != "":
		return errAt("Policy", "a policy is a network's: add Network and Certificate")
	case in.Network.IsZero() && in.Certificate == nil:
		return nil
	case in.Network.IsZero():
		return errAt(certKey(in), "a certificate needs Network = the network's public key")
	case in.Certificate == nil:
		return errAt("Network", "a network needs this member's Certificate or CertificateFile")
	case len(in.Rendezvous) == 0:
		return errAt("Network", "members find each other through a rendezvous: add Rendezvous and RendezvousKey")
	}
	for _, d := range in.Documents {
		if d.Network != in.Network {
			return errAt("Policy", "%s %s is signed by network %s, not this config's Network", in.Policy, d.KindName(), d.Network)
		}
	}
	ct := in.Certificate
	if len(in.Addresses) == 0 {
		in.Addresses = slices.Clone(ct.Addresses)
	}
	for _, a := range in.Addresses {
		if !ct.Holds(a.Addr()) {
			return errAt("Address", "%s is not in this member's certificate (it holds %v)", a.Addr(), ct.Addresses)
		}
	}
	if in.Name == "" {
		in.Name = ct.Name
	}
	return nil
}

// CertificateProblem says why the other members will not take this
// interface's certificate at now, or nil: signed by another network than
// Network, for another key than PrivateKey's, expired or not yet valid.
func (in *Interface) CertificateProblem(now time.Time) error {
	ct := in.Certificate
	if ct == nil {
		return nil
	}
	if self := in.PrivateKey.Public(); ct.Member != self {
		return &cert.Error{Reason: cert.KeyMismatch, Detail: "for the key " + ct.Member.String() + ", not this interface's " + self.String()}
	}
	return ct.Check(in.Network, now)
}

// certKey is the key the certificate came from, for errors.
func certKey(in *Interface) string {
	if in.CertificateFile != "" {
		return "CertificateFile"
	}
	return "Certificate"
}

// NetworkPrefixes are the prefixes of the network's members, from this
// member's certificate: 100.64.0.7/24 makes 100.64.0.0/24. Nil without a
// network.
func (in *Interface) NetworkPrefixes() []netip.Prefix {
	if in.Certificate == nil {
		return nil
	}
	var out []netip.Prefix
	for _, p := range in.Certificate.Addresses {
		if m := p.Masked(); !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}
