//go:build !linux

package tunnel

import "net/netip"

func freeTable() (uint32, error) { return 0, errNoConfigure }

func setFullTunnel(iface string, mark uint32, defaults []netip.Prefix) (func() error, error) {
	return nil, errNoConfigure
}
