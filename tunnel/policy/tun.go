package policy

import "golang.zx2c4.com/wireguard/tun"

// Wrap returns dev as the filter sees it: what wireguard-go writes (the
// packets the tunnel delivers) is judged, what it reads (the packets this
// machine sends) is tracked so that replies pass. Wrap it inside the data
// path's in-flight accounting, which counts what wireguard-go wrote.
func (f *Filter) Wrap(dev tun.Device) tun.Device { return &filterTUN{Device: dev, f: f} }

type filterTUN struct {
	tun.Device
	f *Filter
}

func (t *filterTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	if t.f.table.Load().enforce {
		for i := range n {
			t.f.sent(bufs[i][offset : offset+sizes[i]])
		}
	}
	return n, err
}

// Write passes on what the filter admits, moved to the front of bufs
// (wireguard-go releases its buffers by other references, so their order
// in bufs is free).
func (t *filterTUN) Write(bufs [][]byte, offset int) (int, error) {
	kept := 0
	for i := range bufs {
		if !t.f.admit(bufs[i][offset:]) {
			continue
		}
		bufs[kept], bufs[i] = bufs[i], bufs[kept]
		kept++
	}
	if kept == 0 {
		return 0, nil
	}
	return t.Device.Write(bufs[:kept], offset)
}
