// Package config parses punchtun configuration files: wg-quick INI plus
// Rendezvous and RendezvousKey.
//
// A configuration file looks like this:
//
//	[Interface]
//	PrivateKey = <base64>
//	Address = 100.64.0.1/24            # one or more CIDRs, comma-separated
//	ListenPort = 51820                 # optional; absent or 0 = any free port
//	MTU = 1280
//	Rendezvous = 203.0.113.10:3478     # host:port (a name resolves too)
//	RendezvousKey = <base64 public key of the rendezvous>
//
//	[Peer]
//	Name = bob
//	PublicKey = <base64>
//	AllowedIPs = 100.64.0.2/32
//	Endpoint = 198.51.100.7:51820
//	PersistentKeepalive = 25
//
// As in wg-quick, section names and keys are case-insensitive and '#'
// starts a comment anywhere on a line.
package config

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// DefaultMTU is the MTU to use when the configuration sets none. 1280 is
// the IPv6 minimum, so the tunnel carries IPv6 and fits inside most paths
// even after WireGuard's 60 to 80 bytes of overhead.
const DefaultMTU = 1280

// Config is a parsed configuration file.
type Config struct {
	Interface Interface
	Peers     []Peer

	file string     // as given to Parse
	pos  *positions // where each key was, for errors found later
}

// File is the name c was parsed from ("" if built in code).
func (c *Config) File() string { return c.file }

// KeyError returns an *Error about key k of [Interface], at its line in
// the file c was parsed from: for what is found wrong after parsing, such
// as a change a running interface cannot take.
func (c *Config) KeyError(k, format string, args ...any) error {
	return &Error{File: c.file, Line: c.pos.ifaceLine(k), Key: k, Msg: fmt.Sprintf(format, args...)}
}

// Interface is the [Interface] section.
type Interface struct {
	PrivateKey    key.Private
	Addresses     []netip.Prefix // as written, host bits kept: 100.64.0.1/24
	ListenPort    uint16         // 0 = any free port
	MTU           int            // 0 = not set; callers apply DefaultMTU
	Rendezvous    []string       // host:port each
	RendezvousKey []key.Key      // public key of Rendezvous[i]
	FwMark        uint32         // 0 = off
	// PortMapping is which protocols ask the router for a port forward:
	// auto (also ""), off, natpmp, pcp or upnp (nat/portmap).
	PortMapping string
	// NoLocalCandidates (LocalCandidates = false): this host's own
	// addresses are not offered to peers, only what the rendezvous sees
	// and a port mapping.
	NoLocalCandidates bool
	// Table is where the peers' routes go, as wg-quick's Table: "" or
	// "auto" (the main table; a default route gets policy rules), "off"
	// (no routes), or a table's number or name.
	Table string
	// DNS resolvers and search domains, set through resolvconf while up.
	DNS       []netip.Addr
	DNSSearch []string
	// Domain: punchtun answers DNS for <peer Name>.<Domain> and
	// <Name>.<Domain> (this host) on the interface's addresses
	// (tunnel/names).
	Domain string
	Name   string
	// Hooks, run by bash -c with %i replaced by the interface name.
	PreUp, PostUp, PreDown, PostDown []string
	// Network: this interface is a member of the network whose public key
	// this is, with Certificate, read from CertificateFile if that is set.
	// Zero and nil: no network.
	Network         cert.NetworkKey
	Certificate     *cert.Cert
	CertificateFile string
	// Policy names a file of the network's signed documents, its policy or
	// revocations, one's text a line (`punchtun network policy` and
	// `revoke` print them), relative to the config; Documents are them,
	// verified, of Network.
	Policy    string
	Documents []*cert.Document
	// Userspace: the interface lives in an in-process TCP/IP stack, no
	// TUN (tunnel/userspace); SOCKS5 and HTTPProxy are its proxies' listen
	// addresses ("" for the default, "off"), Forward its port forwards.
	Userspace         bool
	SOCKS5, HTTPProxy string
	Forward           []Forward
}

// Peer is a [Peer] section.
type Peer struct {
	Name                string // optional label
	PublicKey           key.Key
	PresharedKey        key.Key        // zero if absent
	AllowedIPs          []netip.Prefix // masked: 100.64.0.0/24
	Endpoint            string         // "" or host:port as written
	PersistentKeepalive uint16         // seconds, 0 = off
}

// Error is the type of every parse and validation error.
type Error struct {
	File string // file name as given to Parse
	Line int    // 1-based; 0 if the error is not about one line
	Key  string // e.g. "AllowedIPs"; "" if the error is not about one key
	Msg  string
}

// Error returns "file:line: Key: message", leaving out the parts that
// are not set.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		if e.File == "" {
			b.WriteString("line ")
		} else {
			b.WriteString(":")
		}
		b.WriteString(strconv.Itoa(e.Line))
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and parses the configuration file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *fs.PathError names the path
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse parses and validates a configuration read from r. The filename
// is used only in error messages. Every syntax or validation error is an
// *Error; an error reading r is returned wrapped.
func Parse(filename string, r io.Reader) (*Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	p := parser{file: filename, c: new(Config)}
	for i, line := range fileLines(data) {
		if err := p.line(i+1, line); err != nil {
			return nil, err
		}
	}
	if err := p.c.loadCertificateFile(filename, &p.pos); err != nil {
		return nil, err
	}
	if err := p.c.loadPolicy(filename, &p.pos); err != nil {
		return nil, err
	}
	if err := p.c.validate(filename, &p.pos); err != nil {
		return nil, err
	}
	p.c.file, p.c.pos = filename, &p.pos
	return p.c, nil
}

// Validate checks c as Parse does after parsing, for configurations
// built in code. Errors have no file or line.
func (c *Config) Validate() error {
	return c.validate("", nil)
}

// positions records where things were in the file, for error messages.
type positions struct {
	iface     int            // line of the [Interface] header, 0 if none
	ifaceKeys map[string]int // canonical key name → first line
	peers     []peerPos
}

type peerPos struct {
	header int
	keys   map[string]int
}

// ifaceLine returns the line of key k in [Interface], or of the header if
// k is not set. It works on a nil *positions, for Validate.
func (p *positions) ifaceLine(k string) int {
	if p == nil {
		return 0
	}
	if n, ok := p.ifaceKeys[k]; ok {
		return n
	}
	return p.iface
}

// peerLine is ifaceLine for the i'th peer.
func (p *positions) peerLine(i int, k string) int {
	if p == nil || i >= len(p.peers) {
		return 0
	}
	if n, ok := p.peers[i].keys[k]; ok {
		return n
	}
	return p.peers[i].header
}

func (c *Config) validate(file string, pos *positions) error {
	ifaceErr := func(k, format string, args ...any) error {
		return &Error{File: file, Line: pos.ifaceLine(k), Key: k, Msg: fmt.Sprintf(format, args...)}
	}
	peerErr := func(i int, k, format string, args ...any) error {
		return &Error{File: file, Line: pos.peerLine(i, k), Key: k, Msg: fmt.Sprintf(format, args...)}
	}

	if pos != nil && pos.iface == 0 {
		return &Error{File: file, Msg: "missing [Interface] section"}
	}
	in := &c.Interface
	if in.PrivateKey.IsZero() {
		return ifaceErr("PrivateKey", "missing in [Interface]")
	}
	if err := c.validateNetwork(file, pos); err != nil {
		return err
	}
	for _, a := range in.Addresses {
		if !a.IsValid() {
			return ifaceErr("Address", "invalid prefix")
		}
	}
	if in.MTU != 0 {
		// 576 is the minimum IPv4 datagram every host must accept, but
		// IPv6 needs links of at least 1280 bytes, so an interface that
		// carries IPv6 cannot go below that.
		minMTU := 576
		for _, a := range in.Addresses {
			if a.Addr().Is6() {
				minMTU = 1280
				break
			}
		}
		if in.MTU < minMTU || in.MTU > 65535 {
			if minMTU == 1280 {
				return ifaceErr("MTU", "must be 1280..65535 with an IPv6 Address, got %d", in.MTU)
			}
			return ifaceErr("MTU", "must be 576..65535, got %d", in.MTU)
		}
	}
	for _, r := range in.Rendezvous {
		if err := checkHostPort(r); err != nil {
			return ifaceErr("Rendezvous", "%v", err)
		}
	}
	if len(in.RendezvousKey) != len(in.Rendezvous) {
		err := &Error{File: file, Key: "RendezvousKey", Msg: fmt.Sprintf(
			"%d Rendezvous but %d RendezvousKey; each rendezvous needs its public key, in the same order",
			len(in.Rendezvous), len(in.RendezvousKey))}
		// Point at the first RendezvousKey line, or if there is none at
		// the Rendezvous line that lacks it.
		if len(in.RendezvousKey) > 0 {
			err.Line = pos.ifaceLine("RendezvousKey")
		} else {
			err.Line = pos.ifaceLine("Rendezvous")
		}
		return err
	}
	for _, k := range in.RendezvousKey {
		if k.IsZero() {
			return ifaceErr("RendezvousKey", "key is all zeros")
		}
	}

	if in.Domain != "" {
		if len(in.Addresses) == 0 {
			return ifaceErr("Domain", "needs an Address to answer DNS on")
		}
		names := map[string]int{}
		if in.Name != "" {
			names[in.Name] = -1
		}
		for i, p := range c.Peers {
			n := strings.ToLower(p.Name)
			if n == "" || checkLabel(n) != nil {
				continue // not a DNS name: no name in the domain
			}
			if j, ok := names[n]; ok {
				if j < 0 {
					return peerErr(i, "Name", "%q is this interface's own Name too: peers' names under Domain must differ", p.Name)
				}
				return peerErr(i, "Name", "%q is the name of another peer too: peers' names under Domain must differ", p.Name)
			}
			names[n] = i
		}
	}

	self := in.PrivateKey.Public()
	seen := make(map[key.Key]int)        // public key → peer index
	routed := make(map[netip.Prefix]int) // AllowedIPs → peer index
	for i := range c.Peers {
		p := &c.Peers[i]
		if p.PublicKey.IsZero() {
			return peerErr(i, "PublicKey", "missing in [Peer]")
		}
		if p.PublicKey == self {
			return peerErr(i, "PublicKey", "peer has the interface's own public key")
		}
		if j, ok := seen[p.PublicKey]; ok {
			if pos != nil {
				return peerErr(i, "PublicKey", "duplicate peer: same PublicKey as the [Peer] on line %d", pos.peers[j].header)
			}
			return peerErr(i, "PublicKey", "duplicate peer: same PublicKey as peer %d", j+1)
		}
		seen[p.PublicKey] = i
		for _, a := range p.AllowedIPs {
			if !a.IsValid() {
				return peerErr(i, "AllowedIPs", "invalid prefix")
			}
			// WireGuard routes a prefix to one peer only: the other would
			// silently get none of it.
			if j, ok := routed[a]; ok && j != i {
				if pos != nil {
					return peerErr(i, "AllowedIPs", "%v is already routed to the [Peer] on line %d (AllowedIPs on line %d)",
						a, pos.peers[j].header, pos.peerLine(j, "AllowedIPs"))
				}
				return peerErr(i, "AllowedIPs", "%v is already routed to peer %d", a, j+1)
			}
			routed[a] = i
		}
		if p.Endpoint != "" {
			if err := checkHostPort(p.Endpoint); err != nil {
				return peerErr(i, "Endpoint", "%v", err)
			}
		} else if len(in.Rendezvous) == 0 {
			// Without an endpoint the only way to find the peer is to
			// ask a rendezvous server.
			return peerErr(i, "Endpoint", "peer has no Endpoint and no Rendezvous is set")
		}
	}
	return nil
}
