package policy

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The connections the filter lets replies of: every flow this machine
// sent a packet of to a member, and every flow a rule let in. A flow not
// seen for its protocol's timeout is forgotten; replies to it are then
// new connections, which the rules judge.
//
// The table is shared fairly: a member that opens flows by the thousand
// (SYNs from every source port, say) cannot take the room this machine's
// own connections need, nor more than its share of what members open.
// A flow is charged to its member (all the addresses of its certificate
// together) when that member could have made this machine track it: a rule let it in, or this machine sent a
// packet to it that opens no TCP connection (a UDP or ICMP packet, a TCP
// segment of a connection the table had forgotten: these may be replies
// to the member's own packets, whose flows it had evicted). Only TCP
// connections this machine opens (its SYN) are never charged.
//   - charged flows take at most maxInbound of the maxFlows, so reserve
//     flows are always there for the TCP connections this machine opens,
//     whatever members send;
//   - each member holds at most perSender charged flows; past it, a new
//     one replaces its oldest (the sender evicts itself, no one else);
//     once the charged part is full, a new one replaces the oldest of the
//     member holding the most (the sender's own when none holds more), so
//     a member that floods loses its flows before any member that holds
//     fewer loses one;
//   - a TCP flow not yet established (no ACK seen both ways: a SYN flood)
//     or reset is forgotten after a minute or ten seconds, not 30 minutes.
const (
	// tcpIdle is long, so that an idle ssh session whose server speaks
	// first after a pause is still let in (Nebula's default is 12 min;
	// Linux conntrack keeps an established TCP flow for days).
	tcpIdle = 30 * time.Minute
	// tcpOpening is a TCP flow's before its handshake is seen both ways
	// (Linux: 60 s in SYN_RECV, 120 s in SYN_SENT); tcpClosed after a
	// reset (Linux: 10 s in CLOSE).
	tcpOpening = time.Minute
	tcpClosed  = 10 * time.Second
	udpIdle    = 3 * time.Minute // above DNS, QUIC and WireGuard keepalive intervals
	otherIdle  = 30 * time.Second
	// maxFlows bounds the table (about 150 bytes a flow). A full table
	// takes no new flows until a sweep frees some: this machine's new
	// connections then get no replies through the filter, counted. Only
	// this machine's own connections can fill it (maxInbound).
	maxFlows = 1 << 16
	// reserve is the part of the table only this machine's own TCP
	// connections take; maxInbound what flows charged to members may take,
	// all members together.
	reserve    = maxFlows / 4
	maxInbound = maxFlows - reserve
	// perSender bounds the flows charged to one member, however many
	// addresses its certificate holds: 2,048 concurrent connections in is
	// plenty for a member, and 24 members must collude to fill the charged
	// part.
	perSender = 2048
)

// TCP states, bits of tracked.state.
const (
	ackedOut    uint32 = 1 << iota // this machine sent an ACK (not a reset)
	ackedIn                        // the member sent one
	reset                          // either side reset it
	established = ackedOut | ackedIn
)

// tracked is one flow's entry.
type tracked struct {
	last  atomic.Int64  // unix nanoseconds, coarse (Filter's clock)
	state atomic.Uint32 // TCP's: ackedOut, ackedIn, reset
	// inbound: a rule let the flow in, under the policy of seq. A new
	// policy forgets such flows, so that the rules judge them again; flows
	// this machine opened stay.
	inbound bool
	sh      *share // the share it is counted in; nil: not charged
	seq     uint64
	key     flow
}

// share is one member's charged flows, oldest first: the order it evicts
// its own in. order may still name flows a sweep removed.
type share struct {
	n     int
	key   netip.Addr // the member's first address: its key in senders
	order []*tracked
	// prev and next link the shares of n flows (conntrack.byCount).
	prev, next *share
}

// conntrack is the flow table. Lookups of known flows take only the read
// lock, so the per-packet cost is one map read.
type conntrack struct {
	mu      sync.RWMutex
	flows   map[flow]*tracked
	charged int                   // flows charged to members
	senders map[netip.Addr]*share // by the member's first address
	// byCount lists the shares by how many flows they hold (shares of 0
	// are not listed), and heaviest is the most any holds: a full charged
	// part finds the member to take from in O(1), however many members.
	byCount  [perSender + 1]*share
	heaviest int
	// Full counts flows not taken because the table was full; Evicted
	// the flows a sender's new ones replaced.
	Full, Evicted atomic.Uint64
}

func (t *tracked) idle() int64 {
	switch t.key.proto {
	case protoTCP:
		switch s := t.state.Load(); {
		case s&reset != 0:
			return int64(tcpClosed)
		case s&established != established:
			return int64(tcpOpening)
		}
		return int64(tcpIdle)
	case protoUDP:
		return int64(udpIdle)
	}
	return int64(otherIdle)
}

// note records what a TCP segment with flags says of its flow (out: this
// machine sent it). A new SYN starts the flow's states again.
func (t *tracked) note(flags uint8, out bool) {
	var bit uint32
	switch {
	case flags&tcpRST != 0:
		bit = reset
	case flags&(tcpSYN|tcpACK) == tcpSYN:
		if t.state.Load() != 0 {
			t.state.Store(0)
		}
		return
	case flags&tcpACK == 0:
		return
	case out:
		bit = ackedOut
	default:
		bit = ackedIn
	}
	if t.state.Load()&bit == 0 {
		t.state.Or(bit)
	}
}

// seen refreshes f if it is known, not timed out and, when a rule let
// it in, let in by the policy of seq (anyOrigin: however it came); it
// reports whether it was. flags are a TCP segment's (out: sent by this
// machine).
func (ct *conntrack) seen(f flow, now int64, seq uint64, anyOrigin bool, flags uint8, out bool) bool {
	ct.mu.RLock()
	t := ct.flows[f]
	ok := t != nil && now-t.last.Load() <= t.idle() && (anyOrigin || !t.inbound || t.seq == seq)
	ct.mu.RUnlock()
	if !ok {
		return false
	}
	if f.proto == protoTCP {
		t.note(flags, out)
	}
	if now-t.last.Load() > int64(time.Second) {
		t.last.Store(now) // a store a second per flow, not per packet
	}
	return true
}

// add records f, opened by this machine (inbound false) or let in by the
// policy of seq; owner keys the share of the member it is charged to, if
// it is (the member's first address). A live flow keeps how it came when
// this machine sends on it: what a rule let in stays subject to the next
// policy.
func (ct *conntrack) add(f flow, owner netip.Addr, now int64, inbound bool, seq uint64, flags uint8) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.flows == nil {
		ct.flows, ct.senders = map[flow]*tracked{}, map[netip.Addr]*share{}
	}
	t := ct.flows[f]
	switch {
	case t == nil:
	case now-t.last.Load() > t.idle() || inbound != t.inbound:
		ct.remove(t) // timed out, or changing hands: taken anew below
	default: // a rule lets in again what an older policy had let in
		t.seq = seq
		t.last.Store(now)
		t.note(flags, !inbound)
		return
	}
	var sh *share
	if inbound || f.proto != protoTCP || flags&(tcpSYN|tcpACK) != tcpSYN {
		sh = ct.senders[owner]
		if sh == nil {
			sh = &share{key: owner}
		}
		switch {
		case sh.n >= perSender:
			ct.evictOldest(sh)
		case ct.charged >= maxInbound:
			ct.evictOldest(ct.heavier(sh))
		}
		if ct.charged >= maxInbound || sh.n >= perSender {
			ct.Full.Add(1)
			return
		}
	}
	if len(ct.flows) >= maxFlows {
		ct.Full.Add(1)
		return
	}
	t = &tracked{inbound: inbound, sh: sh, seq: seq, key: f}
	t.last.Store(now)
	t.note(flags, !inbound)
	ct.flows[f] = t
	if sh != nil {
		ct.charged++
		ct.count(sh, +1)
		sh.order = append(sh.order, t)
		ct.senders[owner] = sh // again: new, or an eviction emptied it
	}
}

// count changes sh's flows by d (±1), keeping byCount and heaviest.
func (ct *conntrack) count(sh *share, d int) {
	if sh.n > 0 { // unlink from byCount[sh.n]
		if sh.prev != nil {
			sh.prev.next = sh.next
		} else {
			ct.byCount[sh.n] = sh.next
		}
		if sh.next != nil {
			sh.next.prev = sh.prev
		}
		sh.prev, sh.next = nil, nil
	}
	sh.n += d
	if sh.n > 0 {
		if head := ct.byCount[sh.n]; head != nil {
			head.prev = sh
			sh.next = head
		}
		ct.byCount[sh.n] = sh
	}
	if sh.n > ct.heaviest {
		ct.heaviest = sh.n
	}
	for ct.heaviest > 0 && ct.byCount[ct.heaviest] == nil {
		ct.heaviest-- // a step at most: counts change by one
	}
}

// heavier is sh, or a share holding more flows than sh, the most any
// holds: a full charged part makes room by taking from those who hold
// the most, not from a member that holds little.
func (ct *conntrack) heavier(sh *share) *share {
	if heavy := ct.byCount[ct.heaviest]; heavy != nil && heavy.n > sh.n {
		return heavy
	}
	return sh
}

// evictOldest removes sh's oldest flow still held.
func (ct *conntrack) evictOldest(sh *share) {
	for i, t := range sh.order {
		if ct.flows[t.key] == t {
			ct.remove(t)
			ct.Evicted.Add(1)
			sh.order = sh.order[i+1:]
			return
		}
	}
	sh.order = sh.order[:0]
}

// remove forgets t, and counts it out of its member's share.
func (ct *conntrack) remove(t *tracked) {
	delete(ct.flows, t.key)
	sh := t.sh
	if sh == nil {
		return
	}
	ct.charged--
	ct.count(sh, -1)
	if sh.n == 0 && ct.senders[sh.key] == sh {
		delete(ct.senders, sh.key)
	}
}

// sweep forgets flows timed out, and those let in by a policy other than
// seq's; it compacts the senders' orders.
func (ct *conntrack) sweep(now int64, seq uint64) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for _, t := range ct.flows {
		if now-t.last.Load() > t.idle() || t.inbound && t.seq != seq {
			ct.remove(t)
		}
	}
	for _, sh := range ct.senders {
		kept := sh.order[:0]
		for _, t := range sh.order {
			if ct.flows[t.key] == t {
				kept = append(kept, t)
			}
		}
		clear(sh.order[len(kept):])
		sh.order = kept
	}
}

// len is the number of flows tracked.
func (ct *conntrack) len() int {
	ct.mu.RLock()
	defer ct.mu.RUnlock()
	return len(ct.flows)
}
