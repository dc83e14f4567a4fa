package tundev

import (
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// tunReady returns whether a read of dev's file would return at once: a
// poll(2) that does not wait, on the file descriptor Go's poller keeps
// non-blocking (SyscallConn, not Fd, which would make it blocking).
func tunReady(dev tun.Device) func() bool {
	f := dev.File()
	if f == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	fds := []unix.PollFd{{Events: unix.POLLIN}}
	return func() bool {
		ready := false
		rc.Control(func(fd uintptr) {
			fds[0].Fd, fds[0].Revents = int32(fd), 0
			n, err := unix.Poll(fds, 0)
			ready = err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
		})
		return ready
	}
}

// spareMemory maps size bytes of anonymous memory: pages are backed only
// once written, so buffers as long as wireguard-go's cost resident memory
// only for the packets they held.
func spareMemory(size int) ([]byte, func(), error) {
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil, err
	}
	return mem, func() { unix.Munmap(mem) }, nil
}
