package portmap

import (
	"context"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// announceGroup is where NAT-PMP and PCP servers announce a restart or a
// new address (RFC 6886 §3.2.1, RFC 6887 §14.1.3): every host is in the
// all-hosts group already.
const announceGroup = "224.0.0.1:5350"

// ListenAnnouncements calls got with the sender of each NAT-PMP or PCP
// announcement until ctx ends. The port is shared (SO_REUSEADDR): every
// socket bound to the group gets each announcement.
func ListenAnnouncements(ctx context.Context, got func(from netip.Addr)) error {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", announceGroup)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	defer pc.Close()
	conn := pc.(*net.UDPConn)
	buf := make([]byte, 1100)
	for {
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil // closed
		}
		if _, _, ok := parseAnnounce(buf[:n]); ok {
			got(src.Addr().Unmap())
		}
	}
}
