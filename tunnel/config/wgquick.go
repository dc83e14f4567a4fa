package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// The keys wg-quick reads beyond WireGuard's own (Table, SaveConfig, DNS;
// the hooks need no parsing), and punchtun's names (Domain, Name).

// setTable accepts what wg-quick does: auto (the main table, the
// default), off (no routes at all), or a routing table's number or name
// (/etc/iproute2/rt_tables, looked up at up).
func setTable(in *Interface, v string) error {
	switch {
	case strings.EqualFold(v, "auto"), strings.EqualFold(v, "off"):
		in.Table = strings.ToLower(v)
	case isTableName(v):
		in.Table = v
	default:
		return fmt.Errorf("must be auto, off, or a routing table's number or name, got %s", quote(v))
	}
	return nil
}

func isTableName(v string) bool {
	if v == "" || len(v) > 64 {
		return false
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// setSaveConfig takes false only: punchtun never rewrites its config file.
func setSaveConfig(in *Interface, v string) error {
	b, err := parseBool(v)
	switch {
	case err != nil:
		return err
	case b:
		return errors.New("true is not supported: punchtun never rewrites its config file (edit it and run punchtun syncconf); set false or remove the line")
	}
	return nil
}

// setDNS takes wg-quick's list: each entry is a resolver's address or, if
// it is not an address, a search domain.
func setDNS(in *Interface, v string) error {
	for _, e := range splitList(v) {
		if a, err := netip.ParseAddr(e); err == nil {
			in.DNS = append(in.DNS, a)
			continue
		}
		if !isDomainName(e) {
			return fmt.Errorf("%s is neither an IP address nor a domain name", quote(e))
		}
		in.DNSSearch = append(in.DNSSearch, e)
	}
	return nil
}

// setDomain takes the domain the peers' names are answered under.
func setDomain(in *Interface, v string) error {
	v = strings.ToLower(strings.TrimSuffix(v, "."))
	if !isDomainName(v) {
		return fmt.Errorf("%s is not a domain name", quote(v))
	}
	in.Domain = v
	return nil
}

// checkLabel checks that a name can be a DNS label: <Name>.<Domain>.
func checkLabel(v string) error {
	if len(v) == 0 || len(v) > 63 || strings.ContainsAny(v, ". ") || !isDomainName(v) {
		return fmt.Errorf("%s cannot be a DNS name (one label: letters, digits, '-')", quote(v))
	}
	return nil
}
