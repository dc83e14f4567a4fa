package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

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
	errAt := func(format string, args ...any) error {
		return &Error{File: file, Line: pos.ifaceLine("CertificateFile"), Key: "CertificateFile", Msg: fmt.Sprintf(format, args...)}
	}
	if in.Certificate != nil {
		return errAt("give Certificate or CertificateFile, not both")
	}
	path := in.CertificateFile
	if !filepath.IsAbs(path) && file != "" {
		path = filepath.Join(filepath.Dir(file), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return errAt("%v", err)
	}
	if in.Certificate, err = cert.ParseText(string(b)); err != nil {
		return errAt("%s: %v", path, err)
	}
	return nil
}

// validateNetwork checks the membership keys against each other and
// against Address, and fills in Address and Name from the certificate.
// Whether the certificate is valid now is the tunnel's to say (a warning:
// an expired one still brings up the static peers).
func (c *Config) validateNetwork(file string, pos *positions) error {
	in := &c.Interface
	errAt := func(k, format string, args ...any) error {
		return &Error{File: file, Line: pos.ifaceLine(k), Key: k, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case in.Network.IsZero() && in.Certificate == nil:
		return nil
	case in.Network.IsZero():
		return errAt(certKey(in), "a certificate needs Network = the network's public key")
	case in.Certificate == nil:
		return errAt("Network", "a network needs this member's Certificate or CertificateFile")
	case len(in.Rendezvous) == 0:
		return errAt("Network", "members find each other through a rendezvous: add Rendezvous and RendezvousKey")
	}
	ct := in.Certificate
	if ct.Network != in.Network {
		return errAt(certKey(in), "signed by network %s, not the Network of this config", ct.Network)
	}
	if self := in.PrivateKey.Public(); ct.Member != self {
		return errAt(certKey(in), "for the key %s, not this interface's PrivateKey (whose public key is %s)", ct.Member, self)
	}
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
