//go:build linux || darwin || freebsd || openbsd

package tunnel

import (
	"fmt"
	"net"

	"golang.zx2c4.com/wireguard/ipc"
)

// uapiListen opens WireGuard's control socket for the interface name, a
// unix socket in /var/run/wireguard, where wg finds it.
func uapiListen(name string) (net.Listener, error) {
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return nil, fmt.Errorf("open WireGuard control socket: %w", err)
	}
	l, err := ipc.UAPIListen(name, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("listen on WireGuard control socket: %w", err)
	}
	return l, nil
}
