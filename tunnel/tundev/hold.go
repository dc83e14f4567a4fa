package tundev

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// Members on demand. A network's members are not all in WireGuard: the
// first packet from the TUN to an address of the network that no peer
// holds is held here, and the control plane is told (UnknownDestination)
// and looks the address up. Once the member is in WireGuard,
// AddDestinations hands the held packets to wireguard-go as if the TUN had
// just given them, so the ping that started it all is answered, not lost.
//
// wireguard-go's reader may be blocked in the TUN's read when the member
// arrives, or when a packet is injected (a policy document gossiped in the
// tunnel), and an idle device may not give it anything else for minutes.
// A device that can be woken (Waker: the userspace stack) is; a TUN's read
// is woken by a read deadline in the past (its file is in Go's poller).
// The wrapper takes the deadline's error for a wake-up and never passes it
// on: wireguard-go would take any read error for the end of the device.

// Bounds of what is held: a few packets per destination (what a ping or a
// TCP connect sends in the time a lookup takes), for a few destinations,
// for as long as a lookup may take.
const (
	heldPerDestination = 4
	heldDestinations   = 64
	heldFor            = 5 * time.Second
)

// destinations is what the holder knows: the network's prefixes, and the
// addresses in them that a peer holds. Replaced whole (copy on write); read
// per packet.
type destinations struct {
	network []netip.Prefix
	static  []netip.Prefix // static peers' AllowedIPs
	members map[netip.Addr]struct{}
}

// held reports whether a packet to dst is held back: it is in the network
// and no peer holds it.
func (d *destinations) held(dst netip.Addr) bool {
	in := false
	for _, p := range d.network {
		if p.Contains(dst) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	if _, ok := d.members[dst]; ok {
		return false
	}
	for _, p := range d.static {
		if p.Contains(dst) {
			return false
		}
	}
	return true
}

// heldPackets are the packets held for one destination.
type heldPackets struct {
	since time.Time
	pkts  [][]byte
}

// Waker is a tun.Device whose Read, blocked with nothing to hand over, can
// be made to return at once with no packets and no error. A Wake while no
// Read waits is kept for the next (which may then return a packet, and a
// later one return for nothing: a spare wake-up, harmless).
type Waker interface{ Wake() }

// holdingTUN holds packets to members not yet known (see above).
type holdingTUN struct {
	tun.Device
	wake func()   // wakes a blocked read; nil: cannot
	file *os.File // the TUN's, when a read deadline on it is the wake-up
	dsts atomic.Pointer[destinations]

	onMiss func(netip.Addr) // told of each packet held; must not block
	// Dropped counts held packets let go: too many for their
	// destination, too many destinations, or held too long.
	Dropped atomic.Uint64

	mu    sync.Mutex
	held  map[netip.Addr]*heldPackets
	ready [][]byte // released, for the next Read
	// wmu makes changes of dsts one at a time.
	wmu sync.Mutex
}

// newHoldingTUN wraps dev, which reads from the device woken; the two
// differ when a wrapper (batchingTUN) lies between them.
func newHoldingTUN(dev, woken tun.Device, onMiss func(netip.Addr)) *holdingTUN {
	h := &holdingTUN{Device: dev, onMiss: onMiss, held: map[netip.Addr]*heldPackets{}}
	if w, ok := woken.(Waker); ok {
		h.wake = w.Wake
	} else if f := woken.File(); f != nil {
		h.file = f
		h.wake = func() { f.SetReadDeadline(time.Now()) }
	}
	h.dsts.Store(&destinations{})
	return h
}

func (h *holdingTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		if n := h.takeReady(bufs, sizes, offset); n > 0 {
			return n, nil
		}
		n, err := h.Device.Read(bufs, sizes, offset)
		if errors.Is(err, os.ErrDeadlineExceeded) && h.file != nil {
			// A wake-up from release: clear the deadline before looking at
			// what is ready, so that a release after this look wakes the
			// next read.
			h.file.SetReadDeadline(time.Time{})
			err = nil
		}
		if d := h.dsts.Load(); len(d.network) > 0 {
			n = h.filter(d, bufs, sizes, offset, n)
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// takeReady hands over released packets, as many as fit.
func (h *holdingTUN) takeReady(bufs [][]byte, sizes []int, offset int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for ; n < len(bufs) && len(h.ready) > 0; n++ {
		sizes[n] = copy(bufs[n][offset:], h.ready[0])
		h.ready[0] = nil
		h.ready = h.ready[1:]
	}
	if len(h.ready) == 0 {
		h.ready = nil
	}
	return n
}

// filter takes the packets no peer can carry yet out of the first n of
// bufs, holding them, and returns how many are left (moved to the front).
func (h *holdingTUN) filter(d *destinations, bufs [][]byte, sizes []int, offset, n int) int {
	kept := 0
	for i := range n {
		pkt := bufs[i][offset : offset+sizes[i]]
		if dst, ok := destination(pkt); ok && d.held(dst) {
			h.hold(dst, pkt)
			continue
		}
		if kept != i {
			bufs[kept], bufs[i] = bufs[i], bufs[kept]
			sizes[kept] = sizes[i]
		}
		kept++
	}
	return kept
}

// destination is an IP packet's destination address.
func destination(pkt []byte) (netip.Addr, bool) {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(pkt[16:20])), true
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return netip.Addr{}, false
}

// hold keeps a copy of pkt for dst, within the bounds, and tells the
// control plane.
func (h *holdingTUN) hold(dst netip.Addr, pkt []byte) {
	now := time.Now()
	h.mu.Lock()
	hp := h.held[dst]
	if !h.dsts.Load().held(dst) {
		// A peer came for it since the packet was read: setDestinations
		// has run, and found nothing held.
		h.ready = append(h.ready, append([]byte(nil), pkt...))
		h.mu.Unlock()
		return
	}
	if hp == nil {
		h.expire(now)
		if len(h.held) >= heldDestinations {
			h.mu.Unlock()
			h.Dropped.Add(1)
			return
		}
		hp = &heldPackets{since: now}
		h.held[dst] = hp
	}
	if len(hp.pkts) < heldPerDestination {
		hp.pkts = append(hp.pkts, append([]byte(nil), pkt...))
	} else {
		h.Dropped.Add(1)
	}
	h.mu.Unlock()
	if h.onMiss != nil {
		h.onMiss(dst)
	}
}

// expire lets go of what was held too long. Callers hold h.mu.
func (h *holdingTUN) expire(now time.Time) {
	for dst, hp := range h.held {
		if now.Sub(hp.since) > heldFor {
			h.Dropped.Add(uint64(len(hp.pkts)))
			delete(h.held, dst)
		}
	}
}

// setDestinations replaces what the holder knows, releasing what is held
// for addresses a peer now holds.
func (h *holdingTUN) setDestinations(d *destinations) {
	h.dsts.Store(d)
	h.mu.Lock()
	released := false
	for dst, hp := range h.held {
		if !d.held(dst) {
			h.ready = append(h.ready, hp.pkts...)
			delete(h.held, dst)
			released = true
		}
	}
	h.mu.Unlock()
	if released && h.wake != nil {
		h.wake()
	}
}

// inject queues pkt for the next Read, and wakes a blocked one.
func (h *holdingTUN) inject(pkt []byte) {
	h.mu.Lock()
	h.ready = append(h.ready, pkt)
	h.mu.Unlock()
	if h.wake != nil {
		h.wake()
	}
}

// update changes what the holder knows with edit, on a copy.
func (h *holdingTUN) update(edit func(d *destinations)) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	old := h.dsts.Load()
	d := &destinations{network: old.network, static: old.static, members: make(map[netip.Addr]struct{}, len(old.members)+1)}
	for a := range old.members {
		d.members[a] = struct{}{}
	}
	edit(d)
	h.setDestinations(d)
}
