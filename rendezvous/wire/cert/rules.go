package cert

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// A policy's rules. Rules only allow: a packet is let in when some rule's
// From holds its sender, To holds the receiver, and Allow its protocol and
// port. Order does not matter, so the encoding keeps the signer's:
//
//	rules     1 byte count (0..MaxRules), then per rule:
//	from, to  1 byte count (1..MaxSelectors), then per selector:
//	          kind 0 (any) | kind 1 (group), label | kind 2 (name), label |
//	          kind 3 (prefix), family, address, prefix length (masked)
//	allow     1 byte count (1..MaxServices), then per service:
//	          protocol (1: 0 any, 1 icmp, 6 tcp, 17 udp), first port (2),
//	          last port (2); ports are 0, 0 for any and icmp, first ≤ last
//
// A label is as a certificate's name or group (1 byte length, a-z 0-9 -).

// Bounds of a policy.
const (
	MaxRules     = 64
	MaxSelectors = 16
	MaxServices  = 16
)

// SelectorKind says what a Selector names.
type SelectorKind uint8

const (
	SelectAny    SelectorKind = 0 // every member
	SelectGroup  SelectorKind = 1 // members whose certificate has the group
	SelectName   SelectorKind = 2 // the member of that name
	SelectPrefix SelectorKind = 3 // members with an address in the prefix
)

// Selector names members in a rule's From or To.
type Selector struct {
	Kind   SelectorKind
	Label  string       // a group's or name's
	Prefix netip.Prefix // SelectPrefix's, masked
}

// Protocols of a Service.
const (
	ProtoAny  uint8 = 0
	ProtoICMP uint8 = 1 // ICMP and ICMPv6
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
)

// Service is what a rule allows: a protocol and, for TCP and UDP, a range
// of destination ports.
type Service struct {
	Proto    uint8
	From, To uint16 // TCP and UDP: ports; 0, 65535 is every port
}

// Rule allows Allow from members From to members To.
type Rule struct {
	From, To []Selector
	Allow    []Service
}

func (s Selector) String() string {
	switch s.Kind {
	case SelectAny:
		return "*"
	case SelectGroup:
		return "group:" + s.Label
	case SelectName:
		return "name:" + s.Label
	}
	if s.Prefix.IsSingleIP() {
		return s.Prefix.Addr().String()
	}
	return s.Prefix.String()
}

func (s Service) String() string {
	name := map[uint8]string{ProtoAny: "any", ProtoICMP: "icmp", ProtoTCP: "tcp", ProtoUDP: "udp"}[s.Proto]
	switch {
	case s.Proto == ProtoAny || s.Proto == ProtoICMP || s.From == 0 && s.To == 65535:
		return name
	case s.From == s.To:
		return name + "/" + strconv.Itoa(int(s.From))
	}
	return fmt.Sprintf("%s/%d-%d", name, s.From, s.To)
}

// String is the rule as a rules file writes it.
func (r Rule) String() string {
	return "From = " + join(r.From) + "; To = " + join(r.To) + "; Allow = " + join(r.Allow)
}

func join[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}

// check bounds one selector, as signing and parsing both do.
func (s Selector) check() error {
	switch s.Kind {
	case SelectAny:
		return nil
	case SelectGroup, SelectName:
		return CheckLabel(s.Label)
	case SelectPrefix:
		if !s.Prefix.IsValid() || s.Prefix != s.Prefix.Masked() || s.Prefix.Addr().Is4In6() || s.Prefix.Addr().Zone() != "" {
			return fmt.Errorf("prefix %s: not a masked prefix", s.Prefix)
		}
		return nil
	}
	return fmt.Errorf("selector kind %d", s.Kind)
}

func (s Service) check() error {
	switch s.Proto {
	case ProtoAny, ProtoICMP:
		if s.From != 0 || s.To != 0 {
			return fmt.Errorf("%s takes no ports", s)
		}
	case ProtoTCP, ProtoUDP:
		if s.From > s.To {
			return fmt.Errorf("ports %d-%d: first above last", s.From, s.To)
		}
	default:
		return fmt.Errorf("protocol %d: must be any, icmp, tcp or udp", s.Proto)
	}
	return nil
}

func appendRules(b []byte, rules []Rule) ([]byte, error) {
	if len(rules) > MaxRules {
		return nil, fmt.Errorf("policy: %d rules, at most %d", len(rules), MaxRules)
	}
	b = append(b, byte(len(rules)))
	for i, r := range rules {
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("policy: rule %d: %w", i+1, err)
		}
		b = appendSelectors(appendSelectors(b, r.From), r.To)
		b = append(b, byte(len(r.Allow)))
		for _, s := range r.Allow {
			b = append(b, s.Proto, byte(s.From>>8), byte(s.From), byte(s.To>>8), byte(s.To))
		}
	}
	return b, nil
}

func (r Rule) check() error {
	for _, l := range [][]Selector{r.From, r.To} {
		if len(l) < 1 || len(l) > MaxSelectors {
			return fmt.Errorf("%d selectors, must be 1 to %d", len(l), MaxSelectors)
		}
		for _, s := range l {
			if err := s.check(); err != nil {
				return err
			}
		}
	}
	if len(r.Allow) < 1 || len(r.Allow) > MaxServices {
		return fmt.Errorf("%d services allowed, must be 1 to %d", len(r.Allow), MaxServices)
	}
	for _, s := range r.Allow {
		if err := s.check(); err != nil {
			return err
		}
	}
	return nil
}

func appendSelectors(b []byte, sel []Selector) []byte {
	b = append(b, byte(len(sel)))
	for _, s := range sel {
		b = append(b, byte(s.Kind))
		switch s.Kind {
		case SelectGroup, SelectName:
			b = appendLabel(b, s.Label)
		case SelectPrefix:
			b = appendPrefix(b, s.Prefix)
		}
	}
	return b
}

// rules reads a policy's rules.
func (r *reader) rules() []Rule {
	var rules []Rule
	for range r.count(0, MaxRules, "rules") {
		rule := Rule{From: r.selectors(), To: r.selectors()}
		for range r.count(1, MaxServices, "services") {
			p := r.take(5)
			rule.Allow = append(rule.Allow, Service{Proto: p[0], From: uint16(p[1])<<8 | uint16(p[2]), To: uint16(p[3])<<8 | uint16(p[4])})
		}
		if r.err == nil {
			if err := rule.check(); err != nil {
				r.err = err
			}
		}
		rules = append(rules, rule)
	}
	return rules
}

func (r *reader) selectors() []Selector {
	var out []Selector
	for range r.count(1, MaxSelectors, "selectors") {
		s := Selector{Kind: SelectorKind(r.byte())}
		switch s.Kind {
		case SelectAny:
		case SelectGroup, SelectName:
			s.Label = r.label()
		case SelectPrefix:
			s.Prefix = r.prefix()
		default:
			if r.err == nil {
				r.err = errors.New("selector kind " + strconv.Itoa(int(s.Kind)))
			}
		}
		out = append(out, s)
	}
	return out
}
