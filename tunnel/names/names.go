// Package names answers DNS for a tunnel's peers. With `Domain = punch`
// in [Interface], punchtun answers DNS (UDP and TCP, port 53) on the
// interface's own addresses: `<peer Name>.punch` and `<own Name>.punch`
// with A and AAAA records from the host addresses (/32, /128) in their
// AllowedIPs or Address, and every other question is forwarded to the
// resolvers /etc/resolv.conf named when the interface came up. With
// `DNS = <own address>, punch` as well, `ssh bob` then works as a
// search-domain name while every other name still resolves. Only this host
// and the peers are answered: a query from any other source gets nothing.
// Names follow a reload (Update).
//
// In a network, `<member name>.punch` resolves for every member, known or
// not: a name the table lacks is asked of Members (the control plane, which
// looks it up at the rendezvous and adds the member), so `ssh m7.punch`
// works before any packet went to m7.
//
// It knows the config's names and addresses, nothing of how peers are
// reached.
package names

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/punchtun/punchtun/tunnel/config"
)

// nameTTL keeps answers short-lived: a reload may change them.
const nameTTL = 30

// forwardTimeout bounds one forwarded question.
const forwardTimeout = 3 * time.Second

// Members finds the addresses of a network's member by its name; nil if
// no member has it.
type Members interface {
	LookupName(name string, timeout time.Duration) []netip.Addr
}

// memberTimeout bounds a member's lookup for a DNS question: resolvers
// retry after 1 to 5 s.
const memberTimeout = 2 * time.Second

// Server answers the names of one interface.
type Server struct {
	*Resolver
	log      *slog.Logger
	upstream []string // host:port
	servers  []*dns.Server
}

// nameTable is what a config says: names and who may ask.
type nameTable struct {
	records map[string][]netip.Addr // "bob" (a Name, lower case) → its host addresses
	// askers are the sources answered: this host's tunnel addresses, and
	// the peers' AllowedIPs (default routes left out: they hold anyone).
	askers []netip.Prefix
}

func newNameTable(cfg *config.Config) *nameTable {
	in := cfg.Interface
	t := &nameTable{records: map[string][]netip.Addr{}}
	fqdn := strings.ToLower
	for _, a := range in.Addresses {
		t.askers = append(t.askers, netip.PrefixFrom(a.Addr(), a.Addr().BitLen()))
		if in.Name != "" {
			t.records[fqdn(in.Name)] = append(t.records[fqdn(in.Name)], a.Addr())
		}
	}
	// Every member of the network may ask.
	t.askers = append(t.askers, in.NetworkPrefixes()...)
	for _, p := range cfg.Peers {
		for _, ip := range p.AllowedIPs {
			if ip.Bits() > 0 {
				t.askers = append(t.askers, ip)
			}
			if p.Name != "" && ip.IsSingleIP() {
				t.records[fqdn(p.Name)] = append(t.records[fqdn(p.Name)], ip.Addr())
			}
		}
	}
	return t
}

func (t *nameTable) mayAsk(src netip.Addr) bool {
	for _, p := range t.askers {
		if p.Contains(src.Unmap()) {
			return true
		}
	}
	return false
}

// UpstreamResolvers reads the host's resolvers from resolv.conf, leaving
// out our own addresses (a config's DNS may name them, from a last run).
func UpstreamResolvers(resolvConf string, own []netip.Prefix) []string {
	cc, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil
	}
	var out []string
next:
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		for _, o := range own {
			if o.Addr() == a {
				continue next
			}
		}
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	return out
}

// Start answers on every address of cfg's interface, which must be
// up with them.
func Start(log *slog.Logger, cfg *config.Config, upstream []string, members Members) (*Server, error) {
	return StartOn(HostNetwork{}, log, cfg, upstream, members)
}

// Network is where the server listens: the host's, or a userspace stack.
type Network interface {
	ListenPacket(addr netip.AddrPort) (net.PacketConn, error)
	Listen(addr netip.AddrPort) (net.Listener, error)
}

// HostNetwork is the host's own network.
type HostNetwork struct{}

func (HostNetwork) ListenPacket(addr netip.AddrPort) (net.PacketConn, error) {
	return net.ListenPacket("udp", addr.String())
}

func (HostNetwork) Listen(addr netip.AddrPort) (net.Listener, error) {
	return net.Listen("tcp", addr.String())
}

// StartOn is Start on the interface's addresses in n.
func StartOn(n Network, log *slog.Logger, cfg *config.Config, upstream []string, members Members) (*Server, error) {
	ns := &Server{Resolver: NewResolver(cfg, members), log: log, upstream: upstream}
	for _, a := range cfg.Interface.Addresses {
		addr := netip.AddrPortFrom(a.Addr(), 53)
		pc, err := n.ListenPacket(addr)
		if err != nil {
			ns.Close()
			return nil, fmt.Errorf("DNS for Domain %s: %w", cfg.Interface.Domain, err)
		}
		l, err := n.Listen(addr)
		if err != nil {
			pc.Close()
			ns.Close()
			return nil, fmt.Errorf("DNS for Domain %s: %w", cfg.Interface.Domain, err)
		}
		for _, s := range []*dns.Server{{PacketConn: pc, Handler: ns}, {Listener: l, Handler: ns}} {
			ns.servers = append(ns.servers, s)
			go s.ActivateAndServe() // ends at Shutdown (Close)
		}
	}
	if len(upstream) == 0 {
		log.Warn("no resolvers in /etc/resolv.conf: names outside the Domain will not resolve through punchtun", "domain", cfg.Interface.Domain)
	}
	return ns, nil
}

// Close stops answering.
func (ns *Server) Close() {
	for _, s := range ns.servers {
		s.Shutdown()
	}
}

// ServeDNS answers one question: from the table within the domain,
// forwarded outside it, and not at all to a stranger.
func (ns *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	t := ns.table.Load()
	src, err := netip.ParseAddrPort(w.RemoteAddr().String())
	if err != nil || !t.mayAsk(src.Addr()) {
		return
	}
	if r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 {
		m := new(dns.Msg)
		w.WriteMsg(m.SetRcode(r, dns.RcodeNotImplemented))
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	if name != ns.domain && !strings.HasSuffix(name, "."+ns.domain) {
		w.WriteMsg(ns.forward(r, w.LocalAddr().Network()))
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	addrs, ok := ns.lookup(t, name)
	if !ok && name != ns.domain {
		m.Rcode = dns.RcodeNameError
	}
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: nameTTL}
		switch {
		case q.Qtype == dns.TypeA && a.Is4():
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case q.Qtype == dns.TypeAAAA && a.Is6():
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	w.WriteMsg(m)
}

// forward asks the upstream resolvers in turn, over the transport the
// question came by (UDP, retried over TCP when truncated).
func (ns *Server) forward(r *dns.Msg, network string) *dns.Msg {
	var errs []error
	for _, up := range ns.upstream {
		c := &dns.Client{Net: "udp", Timeout: forwardTimeout}
		if network == "tcp" {
			c.Net = "tcp"
		}
		resp, _, err := c.Exchange(r, up)
		if err == nil && resp.Truncated && c.Net == "udp" {
			c.Net = "tcp"
			resp, _, err = c.Exchange(r, up)
		}
		if err == nil {
			return resp
		}
		errs = append(errs, err)
	}
	ns.log.Debug("DNS question not forwarded", "name", r.Question[0].Name, "err", errors.Join(errs...))
	m := new(dns.Msg)
	return m.SetRcode(r, dns.RcodeServerFailure)
}
