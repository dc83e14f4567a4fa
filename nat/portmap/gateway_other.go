//go:build !linux

package portmap

import "net/netip"

// DefaultGateway is the host's default IPv4 gateway: found on Linux only
// so far; elsewhere port mapping reports that there is none.
func DefaultGateway() (netip.Addr, error) { return netip.Addr{}, ErrNoGateway }
