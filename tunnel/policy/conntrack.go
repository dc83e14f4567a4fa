package policy

import (
	"sync"
	"sync/atomic"
	"time"
)

// The connections the filter lets replies of: every flow this machine
// sent a packet of to a member, and every flow a rule let in. A flow not
// seen for its protocol's timeout is forgotten; replies to it are then
// new connections, which the rules judge.
const (
	// tcpIdle is long, so that an idle ssh session whose server speaks
	// first after a pause is still let in (Nebula's default is 12 min;
	// Linux conntrack keeps an established TCP flow for days).
	tcpIdle   = 30 * time.Minute
	udpIdle   = 3 * time.Minute // above DNS, QUIC and WireGuard keepalive intervals
	otherIdle = 30 * time.Second
	// maxFlows bounds the table (about 100 bytes a flow). A full table
	// takes no new flows until a sweep frees some: this machine's new
	// connections then get no replies through the filter, counted.
	maxFlows = 1 << 16
)

// tracked is one flow's entry.
type tracked struct {
	last atomic.Int64 // unix nanoseconds, coarse (Filter's clock)
	// inbound: a rule let the flow in, under the policy of seq. A new
	// policy forgets such flows, so that the rules judge them again; flows
	// this machine opened stay.
	inbound bool
	seq     uint64
}

// conntrack is the flow table. Lookups of known flows take only the read
// lock, so the per-packet cost is one map read.
type conntrack struct {
	mu    sync.RWMutex
	flows map[flow]*tracked
	// Full counts flows not taken because the table was full.
	Full atomic.Uint64
}

func idleFor(proto uint8) time.Duration {
	switch proto {
	case protoTCP:
		return tcpIdle
	case protoUDP:
		return udpIdle
	}
	return otherIdle
}

// seen refreshes f if it is known, not timed out and, when a rule let
// it in, let in by the policy of seq (anyOrigin: however it came); it
// reports whether it was.
func (ct *conntrack) seen(f flow, now int64, seq uint64, anyOrigin bool) bool {
	ct.mu.RLock()
	t := ct.flows[f]
	ok := t != nil && now-t.last.Load() <= int64(idleFor(f.proto)) && (anyOrigin || !t.inbound || t.seq == seq)
	ct.mu.RUnlock()
	if ok && now-t.last.Load() > int64(time.Second) {
		t.last.Store(now) // a store a second per flow, not per packet
	}
	return ok
}

// add records f, opened by this machine (inbound false) or let in by the
// policy of seq. A live flow keeps how it came when this machine sends on
// it: what a rule let in stays subject to the next policy.
func (ct *conntrack) add(f flow, now int64, inbound bool, seq uint64) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.flows == nil {
		ct.flows = map[flow]*tracked{}
	}
	t := ct.flows[f]
	switch {
	case t == nil:
		if len(ct.flows) >= maxFlows {
			ct.Full.Add(1)
			return
		}
		t = &tracked{inbound: inbound, seq: seq}
		ct.flows[f] = t
	case inbound || now-t.last.Load() > int64(idleFor(f.proto)):
		t.inbound, t.seq = inbound, seq
	}
	t.last.Store(now)
}

// sweep forgets flows timed out, and those let in by a policy other than
// seq's.
func (ct *conntrack) sweep(now int64, seq uint64) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for f, t := range ct.flows {
		if now-t.last.Load() > int64(idleFor(f.proto)) || t.inbound && t.seq != seq {
			delete(ct.flows, f)
		}
	}
}

// len is the number of flows tracked.
func (ct *conntrack) len() int {
	ct.mu.RLock()
	defer ct.mu.RUnlock()
	return len(ct.flows)
}
