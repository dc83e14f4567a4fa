package nat

import "golang.org/x/sys/unix"

// SetSocketBuffers sets a socket's SO_RCVBUF and SO_SNDBUF to size bytes,
// forced past the sysctl limits (net.core.rmem_max) when we may (root,
// CAP_NET_ADMIN), else as far as they allow. A socket that carries
// gigabit bursts needs megabytes: at the default (208 KiB) the receive
// queue overflows and TCP inside the tunnel backs off.
func SetSocketBuffers(fd int, size int) {
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], size) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], size)
		}
	}
}
