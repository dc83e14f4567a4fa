// Package transport holds the ways a peer's packets travel besides the
// shared socket, each a link.Transport: the rendezvous's relay over UDP
// (on the shared socket) and over TCP, a socket of its own (a birthday
// round's winner), and a TURN allocation. The control plane opens them
// and chooses among them (tunnel/control); the data path sends on them
// and reads them (tunnel/bind).
//
// Adding a way is one file here, with its link.PathKind, and one case in
// the control plane's path choice (docs/design.md).
package transport

import (
	"sync"
)

// frames holds the frames of one Send, end to end in buf.
type frames struct {
	frames [][]byte
	buf    []byte
}

var framePool = sync.Pool{New: func() any { return new(frames) }}

// frame puts each packet of bufs behind a header of headerLen bytes that
// appendFrame writes. WireGuard's buffers have no room in front (its
// packets start at the buffer's first byte), so the frames are copies, from
// a pool; put them back with framePool.Put. They lie end to end in one
// buffer, and each frame's capacity runs on over the next ones: StdNetBind
// batches same-size packets into one UDP GSO message by appending each
// behind the first, which here writes every frame onto itself. Without
// that room it would send them one datagram each.
func frame(bufs [][]byte, headerLen int, appendFrame func(buf, p []byte) []byte) *frames {
	rf := framePool.Get().(*frames)
	n := 0
	for _, p := range bufs {
		n += headerLen + len(p)
	}
	if cap(rf.buf) < n {
		rf.buf = make([]byte, 0, n) // never grown below: frames point into it
	}
	buf, out := rf.buf[:0], rf.frames[:0]
	for _, p := range bufs {
		start := len(buf)
		buf = appendFrame(buf, p)
		out = append(out, buf[start:])
	}
	rf.frames = out
	return rf
}
