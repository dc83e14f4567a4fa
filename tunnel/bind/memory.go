package bind

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// wireguard-go keeps its packet buffers in pools that grow with the load
// and never shrink on their own: after one iperf3 run a peer holds a few
// hundred MiB, and with no allocation afterwards no garbage collection
// ever runs to drop them. A soft memory limit would bound that, but costs
// a third of the throughput under load. Instead, once the tunnel has gone
// quiet after a burst, two collections empty the pools and the heap is
// handed back to the system: memory follows the load down, at no cost
// while the load lasts.

const (
	memoryCheck = 5 * time.Second
	// memoryQuiet is how long without WireGuard traffic counts as quiet.
	memoryQuiet = 3 * time.Second
	// memoryKeep is the heap worth keeping: below it, nothing is done.
	memoryKeep = 32 << 20
)

// gcPercent is the GOGC a peer runs with unless GOGC is set. The heap a
// tunnel keeps live under load is bounded (tundev's inflight) and
// small, some 40 MB of packet buffers, so collecting at 25% growth rather
// than Go's 100% costs little — the buffers are pooled, little is allocated — and
// keeps the peak near the live heap; a memory limit (GOMEMLIMIT) instead
// has a cliff (the measurements are in docs/benchmarks.md).
const gcPercent = 25

// TuneGC sets the collector for a running tunnel, unless GOGC says
// otherwise.
func TuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
}

// ReleaseMemory runs until done, handing memory back after bursts.
func (b *Bind) ReleaseMemory(done <-chan struct{}) {
	t := time.NewTicker(memoryCheck)
	defer t.Stop()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			if now.Sub(b.lastActivity()) < memoryQuiet {
				continue
			}
			metrics.Read(sample)
			if sample[0].Value.Uint64()+sample[1].Value.Uint64() < memoryKeep {
				continue
			}
			runtime.GC() // moves pooled buffers to the pools' victim caches
			debug.FreeOSMemory()
		}
	}
}

// lastActivity is when WireGuard last sent or received a packet through a
// peer the control plane routes, or sent one to a peer with a fixed
// Endpoint.
func (b *Bind) lastActivity() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	last := b.lastFixed.Load()
	for _, pe := range b.endpoints {
		last = max(last, pe.lastSent.Load(), pe.lastData.Load())
	}
	return time.Unix(0, last)
}
