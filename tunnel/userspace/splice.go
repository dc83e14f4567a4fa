package userspace

import (
	"io"
	"net"
	"sync"
)

// closeWriter is a connection that can end its sending side alone
// (*net.TCPConn, gVisor's TCP, a Unix socket).
type closeWriter interface{ CloseWrite() error }

// Splice copies between a and b both ways until both directions ended,
// passing on each side's end of stream as a half close, then closes both.
func Splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(a, b) }()
	go func() { defer wg.Done(); pipe(b, a) }()
	wg.Wait()
	a.Close()
	b.Close()
}

// pipe copies src to dst, then ends dst's sending side (or, where it
// cannot, closes both, which ends the other direction too).
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(closeWriter); ok && err == nil {
		cw.CloseWrite()
		return
	}
	dst.Close()
	src.Close()
}
