package tunnel

import (
	"fmt"
	"net"

	"golang.zx2c4.com/wireguard/ipc"
)

// uapiListen opens WireGuard's control socket for the interface name: on
// Windows a named pipe, \\.\pipe\ProtectedPrefix\Administrators\WireGuard\NAME.
func uapiListen(name string) (net.Listener, error) {
	l, err := ipc.UAPIListen(name)
	if err != nil {
		return nil, fmt.Errorf("listen on WireGuard control pipe: %w", err)
	}
	return l, nil
}
