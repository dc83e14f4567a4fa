package control

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// markSocket returns a net.Dialer/ListenConfig Control that sets SO_MARK
// to mark on the socket (nil for no mark): every socket punchtun opens
// carries the interface's FwMark, so that policy routing (full tunnel)
// sends it the real way, never into the tunnel itself.
func markSocket(mark uint32) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		if err != nil {
			return err
		}
		return serr
	}
}
