package names

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/punchtun/punchtun/tunnel/config"
)

// Resolver knows the names the interface's names server answers: a
// static peer's Name (and this host's), <Name>.<Domain>, and in a network
// <member>.<Domain>, looked up on demand. The names server answers DNS
// with it; userspace mode's proxies resolve with it directly.
type Resolver struct {
	domain  string  // "punch."; "." without Domain
	members Members // nil without a network
	table   atomic.Pointer[nameTable]
}

// NewResolver knows cfg's names; members (nil for none) finds a
// network's members by name.
func NewResolver(cfg *config.Config, members Members) *Resolver {
	r := &Resolver{domain: strings.ToLower(cfg.Interface.Domain) + ".", members: members}
	r.table.Store(newNameTable(cfg))
	return r
}

// Update takes the names of a reloaded config.
func (r *Resolver) Update(cfg *config.Config) { r.table.Store(newNameTable(cfg)) }

// lookup answers a fully qualified, lower-case name within the domain.
func (r *Resolver) lookup(t *nameTable, fqdn string) ([]netip.Addr, bool) {
	label, ok := strings.CutSuffix(fqdn, "."+r.domain)
	if !ok || r.domain == "." {
		return nil, false
	}
	if addrs, ok := t.records[label]; ok {
		return addrs, true
	}
	if r.members == nil || strings.Contains(label, ".") {
		return nil, false
	}
	addrs := r.members.LookupName(label, memberTimeout)
	return addrs, len(addrs) > 0
}

// LookupHost resolves host as the proxies of userspace mode do: an
// address is itself; a peer's or this host's Name, bare or under the
// Domain, and a member's name under the Domain are the tunnel's; any
// other name is the host resolver's.
func (r *Resolver) LookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	t := r.table.Load()
	if addrs, ok := t.records[name]; ok {
		return addrs, nil
	}
	if addrs, ok := r.lookup(t, name+"."); ok {
		return addrs, nil
	}
	if r.domain != "." && (name+"." == r.domain || strings.HasSuffix(name+".", "."+r.domain)) {
		return nil, fmt.Errorf("no peer or member is named %s", host)
	}
	var out []netip.Addr
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	for _, a := range addrs {
		out = append(out, a.Unmap())
	}
	return out, err
}
