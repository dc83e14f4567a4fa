package portmap

import (
	"net/netip"
	"os"
)

// DefaultGateway is the host's default IPv4 gateway.
func DefaultGateway() (netip.Addr, error) {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return netip.Addr{}, err
	}
	gw, ok := parseRouteTable(b)
	if !ok {
		return netip.Addr{}, ErrNoGateway
	}
	return gw, nil
}
