package nat

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"time"
)

// Mapping is how a NAT maps one local socket to public endpoints.
type Mapping byte

const (
	MappingUnknown Mapping = iota
	// MappingNone: no NAT, the socket's own address is public.
	MappingNone
	// MappingEasy: endpoint-independent mapping, one public endpoint for
	// every destination. Punching works against it.
	MappingEasy
	// MappingHard: endpoint-dependent mapping, a new public port per
	// destination. The endpoint the rendezvous sees is useless to peers.
	MappingHard
	// MappingBlocked: no STUN answer over UDP at all.
	MappingBlocked
)

func (m Mapping) String() string {
	switch m {
	case MappingNone:
		return "none"
	case MappingEasy:
		return "easy"
	case MappingHard:
		return "hard"
	case MappingBlocked:
		return "udp-blocked"
	}
	return "unknown"
}

// MarshalText makes a Mapping a JSON string such as "easy".
func (m Mapping) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// Meaning says in plain words what the mapping means for punching.
func (m Mapping) Meaning() string {
	switch m {
	case MappingNone:
		return "no NAT: this host's own address is public"
	case MappingEasy:
		return "one public port for every destination: peers can punch to it"
	case MappingHard:
		return "a new public port per destination: direct paths need the other side to be easy"
	case MappingBlocked:
		return "no STUN answer over UDP"
	}
	return "only one server answered: ask two addresses to tell"
}

// ClassifyMapping tells the mapping from the endpoints two servers with
// different addresses saw for one socket. b may be invalid when only one
// server answered: then only "no NAT" can be told.
func ClassifyMapping(local []netip.Addr, a, b netip.AddrPort) Mapping {
	switch {
	case !a.IsValid():
		return MappingUnknown
	case slices.Contains(local, a.Addr()):
		return MappingNone
	case !b.IsValid():
		return MappingUnknown
	case a == b:
		return MappingEasy
	}
	return MappingHard
}

// LocalAddrs lists this host's usable addresses.
func LocalAddrs() []netip.Addr {
	var out []netip.Addr
	for _, c := range LocalCandidates(0, "", nil) {
		out = append(out, c.Addr())
	}
	return out
}

// Report is the result of a NAT check.
type Report struct {
	UDP           bool    `json:"udp"`            // a STUN server answered over UDP
	Public        string  `json:"public"`         // our public IPv4 endpoint, as the first server saw it
	PublicIPv6    string  `json:"public_ipv6"`    // our public IPv6 endpoint, if any server was reachable over IPv6
	Mapping       Mapping `json:"mapping"`        // none, easy, hard, udp-blocked or unknown
	PortPreserved bool    `json:"port_preserved"` // the NAT kept the socket's port
	LocalPort     uint16  `json:"local_port"`
	// Seen lists, per server address asked, the endpoint it saw.
	Seen []Observation `json:"seen"`
}

// Observation is one server's view of our socket.
type Observation struct {
	Server string `json:"server"`
	Mapped string `json:"mapped"`
}

// Netcheck probes the network from a fresh UDP socket: it asks each server
// for our public endpoint, and also the first server's alternate address
// (OTHER-ADDRESS) when fewer than two IPv4 servers are given, so that the
// mapping can be told.
func Netcheck(ctx context.Context, servers []netip.AddrPort) (*Report, error) {
	if len(servers) == 0 {
		return nil, errors.New("netcheck: no server")
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	port := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	r := &Report{LocalPort: port, Seen: []Observation{}}

	results := make(map[netip.AddrPort]BindingResult)
	ask := func(dst netip.AddrPort) {
		if _, done := results[dst]; done {
			return
		}
		if res, err := stunRoundTrip(ctx, conn, dst); err == nil {
			results[dst] = res
			r.Seen = append(r.Seen, Observation{Server: dst.String(), Mapped: res.Mapped.String()})
		}
	}
	for _, s := range servers {
		ask(s)
	}
	// The first IPv4 answer, and a second from another IPv4 address or
	// port (a NAT that maps per destination maps each port apart): ours or
	// the one the first server advertises.
	var first, second netip.AddrPort
	for _, s := range servers {
		res, ok := results[s]
		switch {
		case !ok:
		case res.Mapped.Addr().Is6():
			if r.PublicIPv6 == "" {
				r.PublicIPv6 = res.Mapped.String()
			}
		case !first.IsValid():
			first = s
		case !second.IsValid() && s != first:
			second = s
		}
	}
	if first.IsValid() && !second.IsValid() {
		if other := results[first].Other; other.IsValid() && other != first {
			ask(other)
			if _, ok := results[other]; ok {
				second = other
			}
		}
	}
	r.UDP = len(results) > 0
	if !r.UDP {
		r.Mapping = MappingBlocked
		return r, nil
	}
	var a, b netip.AddrPort
	if first.IsValid() {
		a = results[first].Mapped
		r.Public = a.String()
		r.PortPreserved = a.Port() == port
	}
	if second.IsValid() {
		b = results[second].Mapped
	}
	r.Mapping = ClassifyMapping(LocalAddrs(), a, b)
	return r, nil
}

// stunRoundTrip sends a binding request and waits for its answer,
// retransmitting as RFC 8489 suggests (here: 0, 250, 750 ms; 2 s in all).
func stunRoundTrip(ctx context.Context, conn *net.UDPConn, dst netip.AddrPort) (BindingResult, error) {
	tx, req := NewBindingRequest()
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	buf := make([]byte, 1500)
	for _, wait := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, 1250 * time.Millisecond} {
		if _, err := conn.WriteToUDPAddrPort(req, dst); err != nil {
			return BindingResult{}, err
		}
		until := time.Now().Add(wait)
		if until.After(deadline) {
			until = deadline
		}
		conn.SetReadDeadline(until)
		for {
			n, src, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // timeout: retransmit
			}
			if netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) != dst || !IsSTUN(buf[:n]) {
				continue
			}
			if res, err := ParseBindingResponse(buf[:n]); err == nil && res.TxID == tx {
				return res, nil
			}
		}
		if !time.Now().Before(deadline) {
			break
		}
	}
	return BindingResult{}, errors.New("no STUN answer from " + dst.String())
}
