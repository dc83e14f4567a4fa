package config

import (
	"fmt"
	"strconv"
	"strings"
)

// The keys of userspace mode (docs/userspace.md): Userspace, SOCKS5,
// HTTPProxy and Forward.

// Off is the proxy address that turns a proxy off.
const Off = "off"

// Forward is one `Forward = tcp:22=127.0.0.1:22`: what peers send to this
// interface's virtual addresses on Port goes to Target, a host:port on
// this machine's own network.
type Forward struct {
	Proto  string // "tcp" or "udp"
	Port   uint16
	Target string // host:port
}

func (f Forward) String() string { return fmt.Sprintf("%s:%d=%s", f.Proto, f.Port, f.Target) }

// ParseForward parses PROTO:PORT=HOST:PORT, as Forward and --forward take it.
func ParseForward(v string) (Forward, error) {
	lhs, target, ok := strings.Cut(strings.TrimSpace(v), "=")
	proto, port, ok2 := strings.Cut(lhs, ":")
	if !ok || !ok2 {
		return Forward{}, fmt.Errorf("want PROTO:PORT=HOST:PORT (tcp:22=127.0.0.1:22), got %s", quote(v))
	}
	f := Forward{Proto: strings.ToLower(proto), Target: target}
	if f.Proto != "tcp" && f.Proto != "udp" {
		return Forward{}, fmt.Errorf("protocol must be tcp or udp, got %s", quote(proto))
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return Forward{}, fmt.Errorf("port must be 1-65535, got %s", quote(port))
	}
	f.Port = uint16(n)
	if err := checkHostPort(target); err != nil {
		return Forward{}, err
	}
	return f, nil
}

// CheckProxyAddr checks a proxy's listen address: host:port, or off.
func CheckProxyAddr(v string) error {
	if strings.EqualFold(v, Off) {
		return nil
	}
	return checkHostPort(v)
}

func setUserspace(in *Interface, v string) error {
	b, err := parseBool(v)
	in.Userspace = b
	return err
}

func setSOCKS5(in *Interface, v string) error {
	in.SOCKS5 = v
	return CheckProxyAddr(v)
}

func setHTTPProxy(in *Interface, v string) error {
	in.HTTPProxy = v
	return CheckProxyAddr(v)
}

func setForward(in *Interface, v string) error {
	f, err := ParseForward(v)
	if err != nil {
		return err
	}
	for _, o := range in.Forward {
		if o.Proto == f.Proto && o.Port == f.Port {
			return fmt.Errorf("%s:%d is forwarded twice", f.Proto, f.Port)
		}
	}
	in.Forward = append(in.Forward, f)
	return nil
}
