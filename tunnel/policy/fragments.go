package policy

import (
	"hash/maphash"
	"sync/atomic"
	"time"
)

// Later fragments of a datagram carry no transport header, so no rule
// can judge them by port. The filter remembers the datagrams whose first
// fragment it let in (by flow or by rule), by sender, destination and
// fragment id (and protocol, for IPv4), and lets their later fragments in for
// fragTimeout. A first fragment that arrives after the later ones is
// judged as any packet; the later ones were dropped (no reassembly here).
//
// The memory is fixed and lock-free: fragBuckets buckets of fragWays
// datagrams, a sender's datagrams all in the bucket of its address, each
// bucket a ring. So a sender that sends first fragments by the thousand
// overwrites its own (and at most those of the few addresses hashed
// alike), never everyone's.
const (
	fragBuckets = 256
	fragWays    = 8
	fragTimeout = 30 * time.Second // Linux's ipfrag_time
)

type fragments struct {
	seed  maphash.Seed
	slots [fragBuckets][fragWays]fragSlot
	next  [fragBuckets]atomic.Uint32
}

type fragSlot struct {
	key atomic.Uint64 // 0: empty
	at  atomic.Int64  // unix nanoseconds
}

func newFragments() *fragments { return &fragments{seed: maphash.MakeSeed()} }

// of is p's datagram's bucket and key.
func (fr *fragments) of(p *packet) (*[fragWays]fragSlot, *atomic.Uint32, uint64) {
	var b [16 + 16 + 4 + 1]byte
	src, dst := p.src.As16(), p.dst.As16()
	copy(b[0:16], src[:])
	bucket := maphash.Bytes(fr.seed, b[0:16]) % fragBuckets
	copy(b[16:32], dst[:])
	b[32], b[33], b[34], b[35] = byte(p.fragID>>24), byte(p.fragID>>16), byte(p.fragID>>8), byte(p.fragID)
	if p.src.Is4() {
		// IPv4 names a datagram by its protocol too; IPv6 does not, and
		// its later fragments name only the header after the Fragment
		// header, which may be an option header, not the protocol.
		b[36] = p.proto
	}
	k := maphash.Bytes(fr.seed, b[:])
	if k == 0 {
		k = 1
	}
	return &fr.slots[bucket], &fr.next[bucket], k
}

// remember notes that p's datagram, whose first fragment p is, was let in.
func (fr *fragments) remember(p *packet, now int64) {
	slots, next, k := fr.of(p)
	s := &slots[next.Add(1)%fragWays]
	s.at.Store(now)
	s.key.Store(k)
}

// admitted reports whether p, a later fragment, is of a datagram let in.
func (fr *fragments) admitted(p *packet, now int64) bool {
	slots, _, k := fr.of(p)
	for i := range slots {
		if slots[i].key.Load() == k && now-slots[i].at.Load() <= int64(fragTimeout) {
			return true
		}
	}
	return false
}
