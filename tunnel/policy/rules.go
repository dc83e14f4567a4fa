// Package policy is what a member of a network does with its network's
// policy: it reads a rules file (ParseRules, for `punchtun network
// policy`), compiles a signed policy's rules, and filters what the tunnel
// delivers to this machine by the sender's certificate and the packet's
// destination (an address of this member's certificate), statefully:
// replies to connections this machine opened pass (filter.go, a flow
// table shared fairly in conntrack.go, fragments.go). It
// also carries the documents members hand each other inside the tunnel
// (gossip.go). It knows nothing of the rendezvous or of WireGuard's
// devices beyond tun.Device.
package policy

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/tunnel/config"
)

// A rules file is INI, like a config: any number of [Rule] sections, each
// with From, To (who: *, group:NAME, name:NAME, an address or a prefix)
// and Allow (what: any, icmp, tcp, udp, tcp/22, udp/53, tcp/8000-8100),
// each a comma-separated list, each once per rule:
//
//	[Rule]
//	From = group:laptops
//	To = group:servers
//	Allow = tcp/22, icmp

// LoadRules reads the rules file at path.
func LoadRules(path string) ([]cert.Rule, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseRules(path, f)
}

// ParseRules reads a rules file; errors are *config.Error naming the file,
// the line and the key.
func ParseRules(filename string, r io.Reader) ([]cert.Rule, error) {
	var (
		rules  []cert.Rule
		cur    *cert.Rule
		header int
	)
	keys := []config.SectionKey{
		{Name: "From", List: true, Set: func(v string) error { return addSelector(&cur.From, v) }},
		{Name: "To", List: true, Set: func(v string) error { return addSelector(&cur.To, v) }},
		{Name: "Allow", List: true, Set: func(v string) error {
			s, err := ParseService(v)
			cur.Allow = append(cur.Allow, s)
			return err
		}},
	}
	section := func(line int) error {
		if cur != nil {
			for _, k := range []struct {
				name  string
				empty bool
			}{{"From", len(cur.From) == 0}, {"To", len(cur.To) == 0}, {"Allow", len(cur.Allow) == 0}} {
				if k.empty {
					return &config.Error{File: filename, Line: header, Msg: "[Rule] has no " + k.name + " ="}
				}
			}
			for _, l := range [][]cert.Selector{cur.From, cur.To} {
				if len(l) > cert.MaxSelectors {
					return &config.Error{File: filename, Line: header, Msg: fmt.Sprintf("[Rule] names %d members in one list, at most %d", len(l), cert.MaxSelectors)}
				}
			}
			if len(cur.Allow) > cert.MaxServices {
				return &config.Error{File: filename, Line: header, Key: "Allow", Msg: fmt.Sprintf("%d services, at most %d", len(cur.Allow), cert.MaxServices)}
			}
			rules = append(rules, *cur)
		}
		if line != 0 {
			if len(rules) >= cert.MaxRules {
				return &config.Error{File: filename, Line: line, Msg: fmt.Sprintf("more than %d rules", cert.MaxRules)}
			}
			cur, header = &cert.Rule{}, line
		}
		return nil
	}
	if err := config.ParseSections(filename, r, "Rule", keys, section); err != nil {
		return nil, err
	}
	return rules, nil
}

func addSelector(l *[]cert.Selector, v string) error {
	s, err := ParseSelector(v)
	*l = append(*l, s)
	return err
}

// ParseSelector reads one member selector: *, group:NAME, name:NAME, an
// address or a prefix.
func ParseSelector(v string) (cert.Selector, error) {
	switch {
	case v == "*":
		return cert.Selector{Kind: cert.SelectAny}, nil
	case strings.HasPrefix(v, "group:"):
		s := cert.Selector{Kind: cert.SelectGroup, Label: strings.TrimPrefix(v, "group:")}
		return s, cert.CheckLabel(s.Label)
	case strings.HasPrefix(v, "name:"):
		s := cert.Selector{Kind: cert.SelectName, Label: strings.TrimPrefix(v, "name:")}
		return s, cert.CheckLabel(s.Label)
	}
	if a, err := netip.ParseAddr(v); err == nil && a.Zone() == "" {
		return cert.Selector{Kind: cert.SelectPrefix, Prefix: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}, nil
	}
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return cert.Selector{}, fmt.Errorf("%q: want *, group:NAME, name:NAME, an address or a prefix", v)
	}
	if p != p.Masked() {
		return cert.Selector{}, fmt.Errorf("%q: host bits set; did you mean %s?", v, p.Masked())
	}
	return cert.Selector{Kind: cert.SelectPrefix, Prefix: p}, nil
}

// ParseService reads one allowed service: any, icmp, tcp, udp, or tcp or
// udp with a port (tcp/22) or a range (tcp/8000-8100).
func ParseService(v string) (cert.Service, error) {
	name, ports, hasPorts := strings.Cut(strings.ToLower(v), "/")
	protos := map[string]uint8{"any": cert.ProtoAny, "icmp": cert.ProtoICMP, "tcp": cert.ProtoTCP, "udp": cert.ProtoUDP}
	proto, ok := protos[name]
	switch {
	case !ok:
		return cert.Service{}, fmt.Errorf("%q: want any, icmp, tcp, udp, tcp/PORT or udp/FIRST-LAST", v)
	case proto != cert.ProtoTCP && proto != cert.ProtoUDP:
		if hasPorts {
			return cert.Service{}, fmt.Errorf("%q: %s takes no port", v, name)
		}
		return cert.Service{Proto: proto}, nil
	case !hasPorts:
		return cert.Service{Proto: proto, From: 0, To: 65535}, nil
	}
	first, last, isRange := strings.Cut(ports, "-")
	lo, err := parsePort(first)
	if err != nil {
		return cert.Service{}, fmt.Errorf("%q: %v", v, err)
	}
	hi := lo
	if isRange {
		if hi, err = parsePort(last); err != nil {
			return cert.Service{}, fmt.Errorf("%q: %v", v, err)
		}
		if hi < lo {
			return cert.Service{}, fmt.Errorf("%q: the range ends before it starts", v)
		}
	}
	return cert.Service{Proto: proto, From: lo, To: hi}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q: want 1 to 65535", s)
	}
	return uint16(n), nil
}
