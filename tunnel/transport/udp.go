package transport

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// udpWriter writes batches on a socket beside the shared one (a birthday
// round's winner, a TURN allocation's): in GSO batches while the kernel
// takes them (sendSegmented), else one datagram at a time.
type udpWriter struct {
	conn  *net.UDPConn
	noGSO atomic.Bool // the kernel refused GSO once
}

// segmentPool holds the scratch buffers of GSO sends.
var segmentPool = sync.Pool{New: func() any { b := make([]byte, maxSegmentBuf); return &b }}

func (w *udpWriter) write(bufs [][]byte, dst netip.AddrPort) error {
	if len(bufs) > 1 && !w.noGSO.Load() {
		scratch := segmentPool.Get().(*[]byte)
		sent, err := sendSegmented(w.conn, dst, bufs, *scratch)
		segmentPool.Put(scratch)
		if !errors.Is(err, errNoGSO) {
			return err
		}
		w.noGSO.Store(true)
		bufs = bufs[sent:]
	}
	for _, p := range bufs {
		if _, err := w.conn.WriteToUDPAddrPort(p, dst); err != nil {
			return err
		}
	}
	return nil
}
