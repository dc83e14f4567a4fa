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
	conn, err := listenGroup(ctx, announceGroup)
	if err != nil {
		return err
	}
	defer conn.Close()
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

// listenGroup listens on the group address (host:port) on a shared
// port; the socket is closed when ctx ends.
func listenGroup(ctx context.Context, group string) (*net.UDPConn, error) {
	pc, err := sharedPort.ListenPacket(ctx, "udp4", group)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { pc.Close() })
	return pc.(*net.UDPConn), nil
}

// sharedPort listens on a port that other sockets bound to the same group
// share (SO_REUSEADDR): each gets every datagram to the group.
var sharedPort = net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}}
