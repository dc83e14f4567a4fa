package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/punchtun/punchtun/nat/portmap"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// A field describes one key of a section of type T.
type field[T any] struct {
	name string // canonical spelling, used in errors
	list bool   // repeating the key appends; otherwise a repeat is an error
	set  func(*T, string) error
}

var interfaceFields = map[string]field[Interface]{
	"privatekey":      {"PrivateKey", false, setPrivateKey},
	"address":         {"Address", true, setAddress},
	"listenport":      {"ListenPort", false, setListenPort},
	"mtu":             {"MTU", false, setMTU},
	"rendezvous":      {"Rendezvous", true, setRendezvous},
	"rendezvouskey":   {"RendezvousKey", true, setRendezvousKey},
	"fwmark":          {"FwMark", false, setFwMark},
	"portmapping":     {"PortMapping", false, setPortMapping},
	"localcandidates": {"LocalCandidates", false, setLocalCandidates},
	"table":           {"Table", false, setTable},
	"saveconfig":      {"SaveConfig", false, setSaveConfig},
	"dns":             {"DNS", true, setDNS},
	"domain":          {"Domain", false, setDomain},
	"name":            {"Name", false, func(in *Interface, v string) error { in.Name = strings.ToLower(v); return checkLabel(v) }},
	"network":         {"Network", false, setNetwork},
	"certificate":     {"Certificate", false, setCertificate},
	"certificatefile": {"CertificateFile", false, setCertificateFile},
	"policy":          {"Policy", false, func(in *Interface, v string) error { in.Policy = v; return nil }},
	"userspace":       {"Userspace", false, setUserspace},
	"socks5":          {"SOCKS5", false, setSOCKS5},
	"httpproxy":       {"HTTPProxy", false, setHTTPProxy},
	"forward":         {"Forward", true, setForward},
	// Hooks repeat: each line runs in order (osnet.RunHooks).
	"preup":    {"PreUp", true, func(in *Interface, v string) error { in.PreUp = append(in.PreUp, v); return nil }},
	"postup":   {"PostUp", true, func(in *Interface, v string) error { in.PostUp = append(in.PostUp, v); return nil }},
	"predown":  {"PreDown", true, func(in *Interface, v string) error { in.PreDown = append(in.PreDown, v); return nil }},
	"postdown": {"PostDown", true, func(in *Interface, v string) error { in.PostDown = append(in.PostDown, v); return nil }},
}

var peerFields = map[string]field[Peer]{
	"name":                {"Name", false, func(p *Peer, v string) error { p.Name = v; return nil }},
	"publickey":           {"PublicKey", false, setPublicKey},
	"presharedkey":        {"PresharedKey", false, setPresharedKey},
	"allowedips":          {"AllowedIPs", true, setAllowedIPs},
	"endpoint":            {"Endpoint", false, setEndpoint},
	"persistentkeepalive": {"PersistentKeepalive", false, setPersistentKeepalive},
}

type parser struct {
	file    string
	c       *Config
	section string         // "interface", "peer" or "" before the first header
	keys    map[string]int // keys of the current section → first line
	pos     positions
}

func (p *parser) errorf(line int, k, format string, args ...any) error {
	return &Error{File: p.file, Line: line, Key: k, Msg: fmt.Sprintf(format, args...)}
}

// line parses line number n.
func (p *parser) line(n int, line string) error {
	kind, k, v := lexLine(line)
	switch kind {
	case blankLine:
		return nil
	case headerLine:
		return p.header(n, k)
	case badLine:
		// Do not quote the line: it may be a private key on its own.
		return p.errorf(n, "", "expected Key = Value or [Section]")
	}
	lk := strings.ToLower(k)
	switch p.section {
	case "interface":
		if f, ok := interfaceFields[lk]; ok {
			return setField(p, n, f, &p.c.Interface, v)
		}
		if f, ok := peerFields[lk]; ok {
			return p.errorf(n, f.name, "unknown key in [Interface]; it belongs in [Peer]")
		}
	case "peer":
		if f, ok := peerFields[lk]; ok {
			return setField(p, n, f, &p.c.Peers[len(p.c.Peers)-1], v)
		}
		if f, ok := interfaceFields[lk]; ok {
			return p.errorf(n, f.name, "unknown key in [Peer]; it belongs in [Interface]")
		}
	default:
		if f, ok := interfaceFields[lk]; ok {
			k = f.name
		} else if f, ok := peerFields[lk]; ok {
			k = f.name
		} else if !plausibleKeyName(k) {
			k = ""
		}
		return p.errorf(n, k, "key outside any section; add [Interface] or [Peer] above it")
	}
	if !plausibleKeyName(k) {
		// A base64 private key on a line of its own ends in '=', so it
		// parses as a key name. Never echo it.
		return p.errorf(n, "", "expected Key = Value")
	}
	return p.errorf(n, k, "unknown key")
}

func (p *parser) header(n int, line string) error {
	name := strings.TrimSpace(line[1 : len(line)-1])
	switch strings.ToLower(name) {
	case "interface":
		if p.pos.iface != 0 {
			return p.errorf(n, "", "duplicate [Interface] section; the first is on line %d", p.pos.iface)
		}
		p.section = "interface"
		p.keys = make(map[string]int)
		p.pos.iface = n
		p.pos.ifaceKeys = p.keys
	case "peer":
		p.section = "peer"
		p.keys = make(map[string]int)
		p.c.Peers = append(p.c.Peers, Peer{})
		p.pos.peers = append(p.pos.peers, peerPos{header: n, keys: p.keys})
	default:
		return p.errorf(n, "", "unknown section %s; want [Interface] or [Peer]", quote(line))
	}
	return nil
}

func setField[T any](p *parser, n int, f field[T], dst *T, v string) error {
	if first, ok := p.keys[f.name]; ok && !f.list {
		return p.errorf(n, f.name, "duplicate key; already set on line %d", first)
	} else if !ok {
		p.keys[f.name] = n
	}
	if err := f.set(dst, v); err != nil {
		return p.errorf(n, f.name, "%v", err)
	}
	return nil
}

// plausibleKeyName reports whether k looks enough like a key name to be
// shown in an error message.
func plausibleKeyName(k string) bool {
	if k == "" || len(k) > 32 {
		return false
	}
	for _, r := range k {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-' || r == ' ') {
			return false
		}
	}
	return true
}

// looksLikeKey reports whether s contains a run of 40 or more base64
// characters, that is, possibly a key. Error messages hide such values,
// so that a private key pasted into the wrong line does not end up in a
// log.
func looksLikeKey(s string) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/' {
			run++
			if run >= 40 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}

// quote quotes s for an error message, unless it may be a key.
func quote(s string) string {
	if looksLikeKey(s) {
		return "(value not shown: it looks like a key)"
	}
	return strconv.Quote(s)
}

// splitList splits a comma-separated value, dropping empty items.
func splitList(v string) []string {
	var items []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

// parseList parses each item of a comma-separated value; the first bad
// item is the error.
func parseList[T any](v string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, s := range splitList(v) {
		t, err := parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// parseKey parses a key and rejects the all-zero key, which is never a
// valid private or public key.
func parseKey(v string) (key.Key, error) {
	k, err := key.Parse(v)
	if err != nil {
		// key.Parse never includes the key text in its errors.
		return key.Key{}, errors.New(strings.TrimPrefix(err.Error(), "key: "))
	}
	if k.IsZero() {
		return key.Key{}, errors.New("key is all zeros")
	}
	return k, nil
}

// parsePrefix parses a CIDR, or a bare address as a single-host prefix,
// as wg-quick does for both Address and AllowedIPs.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, badPrefix(s, err)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, badPrefix(s, err)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, badPrefix(s, errors.New("IPv6 zones cannot be present in a prefix"))
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func badPrefix(s string, err error) error {
	if looksLikeKey(s) {
		return errors.New("bad CIDR (value not shown: it looks like a key)")
	}
	// netip's messages repeat the input, which we quote already.
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "netip.ParsePrefix("+strconv.Quote(s)+"): ")
	addr, _, _ := strings.Cut(s, "/")
	msg = strings.TrimPrefix(msg, "ParseAddr("+strconv.Quote(addr)+"): ")
	return fmt.Errorf("bad CIDR %q: %s", s, msg)
}

// checkHostPort checks that s is host:port with a numeric port 1..65535.
// The host is an IP address, IPv6 in brackets, or a DNS name; the name is
// resolved later, by the caller, so only its syntax is checked here.
func checkHostPort(s string) error {
	bad := func(why string) error {
		return fmt.Errorf("bad host:port %s: %s", quote(s), why)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return bad(ae.Err)
		}
		return bad("invalid")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return bad("port must be 1..65535")
	}
	if host == "" {
		return bad("missing host")
	}
	if strings.HasPrefix(s, "[") {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return bad("only an IPv6 address may be in brackets")
		}
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !isDomainName(host) {
		return bad("host must be an IP address or a DNS name")
	}
	return nil
}

// isDomainName reports whether s is a syntactically valid DNS name. It is
// lenient about '_' and hyphens, as resolvers are, but rejects names whose
// last label is numeric: those are mistyped IPv4 addresses like 1.2.3.
func isDomainName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	numeric := false
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		numeric = true
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case '0' <= c && c <= '9':
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '-', c == '_':
				numeric = false
			default:
				return false
			}
		}
	}
	return !numeric
}

// parseUint parses a decimal number of at most bits bits, or "off" as 0
// when off is set.
func parseUint(v string, bits int, off bool) (uint64, error) {
	if off && strings.EqualFold(v, "off") {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, bits)
	if err != nil {
		limit := uint64(1)<<bits - 1
		if off {
			return 0, fmt.Errorf("must be 0..%d or off, got %s", limit, quote(v))
		}
		return 0, fmt.Errorf("must be 0..%d, got %s", limit, quote(v))
	}
	return n, nil
}

func setPrivateKey(in *Interface, v string) error {
	k, err := parseKey(v)
	in.PrivateKey = key.Private(k)
	return err
}

func setAddress(in *Interface, v string) error {
	// Keep the host bits: 100.64.0.1/24 is the address 100.64.0.1 on the
	// network 100.64.0.0/24.
	ps, err := parseList(v, parsePrefix)
	in.Addresses = append(in.Addresses, ps...)
	return err
}

func setListenPort(in *Interface, v string) error {
	n, err := parseUint(v, 16, false)
	in.ListenPort = uint16(n)
	return err
}

func setMTU(in *Interface, v string) error {
	// The IPv6 minimum of 1280 depends on Address, which may come later;
	// validate checks it once the whole file is read.
	n, err := strconv.Atoi(v)
	if err != nil || n < 576 || n > 65535 {
		return fmt.Errorf("must be 576..65535, got %s", quote(v))
	}
	in.MTU = n
	return nil
}

func setRendezvous(in *Interface, v string) error {
	hps, err := parseList(v, func(s string) (string, error) { return s, checkHostPort(s) })
	in.Rendezvous = append(in.Rendezvous, hps...)
	return err
}

func setRendezvousKey(in *Interface, v string) error {
	ks, err := parseList(v, parseKey)
	in.RendezvousKey = append(in.RendezvousKey, ks...)
	return err
}

// setFwMark accepts what wg(8) does: "off", decimal, or hex with 0x.
func setFwMark(in *Interface, v string) error {
	if strings.EqualFold(v, "off") {
		in.FwMark = 0
		return nil
	}
	s, base := v, 10
	if len(v) > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X') {
		s, base = v[2:], 16
	}
	n, err := strconv.ParseUint(s, base, 32)
	if err != nil {
		return fmt.Errorf("must be a 32-bit number (decimal or 0x hex) or off, got %s", quote(v))
	}
	in.FwMark = uint32(n)
	return nil
}

func setPublicKey(p *Peer, v string) error {
	k, err := parseKey(v)
	p.PublicKey = k
	return err
}

func setPresharedKey(p *Peer, v string) error {
	// An all-zero preshared key is what WireGuard uses for "none", so
	// unlike the other keys it is accepted.
	k, err := key.Parse(v)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "key: "))
	}
	p.PresharedKey = k
	return nil
}

func setAllowedIPs(p *Peer, v string) error {
	// Routing looks only at the network part; mask it so that
	// 100.64.0.5/24 and 100.64.0.0/24 compare equal.
	ps, err := parseList(v, func(s string) (netip.Prefix, error) {
		pfx, err := parsePrefix(s)
		return pfx.Masked(), err
	})
	p.AllowedIPs = append(p.AllowedIPs, ps...)
	return err
}

func setEndpoint(p *Peer, v string) error {
	if err := checkHostPort(v); err != nil {
		return err
	}
	p.Endpoint = v
	return nil
}

func setPersistentKeepalive(p *Peer, v string) error {
	n, err := parseUint(v, 16, true)
	p.PersistentKeepalive = uint16(n)
	return err
}

// parseBool takes a boolean key's value: true or false (or 1, 0, …).
func parseBool(v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("must be true or false, got %s", quote(v))
	}
	return b, nil
}

// setLocalCandidates takes true (the default) or false.
func setLocalCandidates(in *Interface, v string) error {
	b, err := parseBool(v)
	in.NoLocalCandidates = !b
	return err
}

// setPortMapping takes auto, off, natpmp, pcp or upnp, in any case.
func setPortMapping(in *Interface, v string) error {
	v = strings.ToLower(v)
	if _, err := portmap.ParseMode(v); err != nil || v == "" {
		return fmt.Errorf("must be auto, off, natpmp, pcp or upnp, got %s", quote(v))
	}
	in.PortMapping = v
	return nil
}
