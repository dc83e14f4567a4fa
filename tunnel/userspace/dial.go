package userspace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// Resolver resolves names as the interface's names server would
// (names.Resolver).
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]netip.Addr, error)
}

// dialTimeout bounds one connection attempt through the tunnel: a peer
// found on demand, or reached over a relay, answers within it.
const dialTimeout = 30 * time.Second

// Dialer dials through the stack, resolving names with a Resolver.
type Dialer struct {
	Stack    *Stack
	Resolver Resolver
}

// Resolve is host:port's addresses, each with the port.
func (d *Dialer) Resolve(ctx context.Context, host string, port uint16) ([]netip.AddrPort, error) {
	addrs, err := d.Resolver.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s: no addresses", host)
	}
	out := make([]netip.AddrPort, len(addrs))
	for i, a := range addrs {
		out[i] = netip.AddrPortFrom(a, port)
	}
	return out, nil
}

// Dial connects to address (host:port) through the tunnel over network
// "tcp" or "udp", trying each of the host's addresses in turn.
func (d *Dialer) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("bad port in %q", address)
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	aps, err := d.Resolve(ctx, host, uint16(port))
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ap := range aps {
		var c net.Conn
		switch network {
		case "tcp", "tcp4", "tcp6":
			c, err = d.Stack.DialTCP(ctx, ap)
		case "udp", "udp4", "udp6":
			c, err = d.Stack.DialUDP(ap)
		default:
			return nil, fmt.Errorf("network %q: want tcp or udp", network)
		}
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ap, err))
	}
	return nil, errors.Join(errs...)
}
