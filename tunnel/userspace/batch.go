package userspace

import (
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
)

// netstack's device hands over one packet a Read, so wireguard-go would
// encrypt and send every packet alone, one system call each: the send
// path was a third of a userspace peer's CPU under iperf3. batchDevice
// gathers what the stack sends while wireguard-go works on the last
// batch: a goroutine reads the stack into a queue, and Read takes all
// that is queued, up to a batch.

// batchSize is the packets a Read may return: one GSO send's worth.
const batchSize = 64

// queueLen bounds the packets read ahead of wireguard-go.
const queueLen = 256

type batchDevice struct {
	tun.Device
	queue chan []byte // packets read from the stack, each a pooled buffer
	pool  sync.Pool
	done  chan struct{} // closed when the reader has ended
}

func newBatchDevice(dev tun.Device, mtu int) *batchDevice {
	d := &batchDevice{Device: dev, queue: make(chan []byte, queueLen), done: make(chan struct{})}
	d.pool.New = func() any { return make([]byte, mtu+64) }
	go d.read()
	return d
}

// read moves the stack's packets into the queue until the stack closes.
func (d *batchDevice) read() {
	defer close(d.done)
	defer close(d.queue)
	bufs, sizes := make([][]byte, 1), make([]int, 1)
	for {
		buf := d.pool.Get().([]byte)
		bufs[0] = buf[:cap(buf)]
		n, err := d.Device.Read(bufs, sizes, 0)
		if err != nil {
			return
		}
		if n == 1 {
			d.queue <- buf[:sizes[0]]
		}
	}
}

func (d *batchDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt, ok := <-d.queue
	if !ok {
		return 0, os.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], pkt)
		d.pool.Put(pkt[:cap(pkt)])
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case pkt, ok = <-d.queue:
			if !ok {
				return n, nil
			}
		default:
			return n, nil
		}
	}
}

func (d *batchDevice) BatchSize() int { return batchSize }

// Close closes the stack, which ends the reader, and waits for it.
func (d *batchDevice) Close() error {
	err := d.Device.Close()
	<-d.done
	return err
}
