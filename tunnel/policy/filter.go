package policy

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// Member is a network member as rules see it: its certificate's name,
// groups and addresses.
type Member struct {
	Name   string
	Groups []string
	Addrs  []netip.Addr
}

// shareKey is what the flow table charges m's flows to, whichever of its
// addresses (a) they are with: its first address, so that a certificate
// of many addresses gets one share.
func (m *Member) shareKey(a netip.Addr) netip.Addr {
	if len(m.Addrs) > 0 {
		return m.Addrs[0]
	}
	return a
}

// MemberOf is c as rules see it.
func MemberOf(c *cert.Cert) *Member {
	m := &Member{Name: c.Name, Groups: c.Groups}
	for _, p := range c.Addresses {
		m.Addrs = append(m.Addrs, p.Addr())
	}
	return m
}

// Why a packet was dropped, for the counters.
const (
	DropNoRule      = iota // no rule allows it, and it is no reply
	DropMalformed          // not an IP packet the filter can read
	DropDestination        // from a member, to no address of this member's
	NumDrops
)

// DropNames are the reasons' names in status and metric labels.
var DropNames = [NumDrops]string{"no-rule", "malformed", "destination"}

// Filter is a member's filter of what the tunnel delivers: with a policy,
// a packet from a member passes when it belongs to a flow this machine
// opened or a rule let in, or when it is addressed to this member (an
// address of its certificate) and a rule allows it (its flow is then let
// in from then on). Rules judge where a packet goes: a member cannot
// route through this machine (to its LAN, a container bridge, another
// address it holds) by adding addresses to its side's AllowedIPs.
//
// While no policy is held, a member's packets pass, but only to this
// member's addresses: a certificate names the addresses its member may
// be reached at, and nothing else of this machine is the network's.
// Packets of static peers (not members) are never judged. Safe for
// concurrent use: the data path reads, the control plane replaces the
// table whole (Set).
type Filter struct {
	table  atomic.Pointer[table]
	ct     conntrack
	frags  *fragments
	clock  atomic.Int64 // unix nanoseconds, set by Tick: packets read no clock
	gossip atomic.Pointer[func(src netip.Addr, body []byte)]
	// Dropped counts the packets dropped, by reason (DropNames).
	Dropped [NumDrops]atomic.Uint64
	// Allowed counts, per rule of the policy held, the flows it let in.
	allowed atomic.Pointer[[]atomic.Uint64]
	swept   time.Time
}

// table is what the data path judges by; replaced whole.
type table struct {
	seq     uint64
	enforce bool // a policy is held
	rules   []cert.Rule
	self    *Member
	members map[netip.Addr]*Member
}

// New returns a filter that lets everything pass until Set gives it a
// policy.
func New() *Filter {
	f := &Filter{frags: newFragments()}
	f.table.Store(&table{})
	f.allowed.Store(&[]atomic.Uint64{})
	f.Tick(time.Now())
	return f
}

// Set gives the filter a policy (nil: none, everything passes), this
// member as rules see it, and the members by address. Call it before a
// member enters WireGuard, so that none of its packets pass unjudged.
func (f *Filter) Set(policy *cert.Document, self *Member, members map[netip.Addr]*Member) {
	t := &table{self: self, members: members}
	if policy != nil && self != nil {
		t.enforce, t.seq, t.rules = true, policy.Seq, policy.Rules
	}
	if old := f.table.Load(); old.seq != t.seq || len(*f.allowed.Load()) != len(t.rules) {
		counts := make([]atomic.Uint64, len(t.rules))
		f.allowed.Store(&counts)
	}
	f.table.Store(t)
}

// OnGossip sets what receives the members' documents sent in-tunnel to
// this machine; they never reach the system.
func (f *Filter) OnGossip(fn func(src netip.Addr, body []byte)) { f.gossip.Store(&fn) }

// Tick advances the filter's clock and now and then forgets flows timed
// out and flows let in by an older policy. The control loop calls it.
func (f *Filter) Tick(now time.Time) {
	f.clock.Store(now.UnixNano())
	if now.Sub(f.swept) >= 10*time.Second {
		f.swept = now
		f.ct.sweep(now.UnixNano(), f.table.Load().seq)
	}
}

// Flows is the number of flows tracked.
func (f *Filter) Flows() int { return f.ct.len() }

// FlowsRefused counts flows not tracked because the table (or the part
// of it members may take) was full.
func (f *Filter) FlowsRefused() uint64 { return f.ct.Full.Load() }

// FlowsEvicted counts flows a member's newer flows replaced, past its
// share of the table.
func (f *Filter) FlowsEvicted() uint64 { return f.ct.Evicted.Load() }

// Allowed returns, per rule of the policy held, the flows it let in.
func (f *Filter) Allowed() []uint64 {
	counts := *f.allowed.Load()
	out := make([]uint64, len(counts))
	for i := range counts {
		out[i] = counts[i].Load()
	}
	return out
}

// admit judges a packet the tunnel delivers; false: drop it (counted).
func (f *Filter) admit(pkt []byte) bool {
	t := f.table.Load()
	if t.self == nil && !mayBeGossip(pkt) {
		return true // no network: no member to judge, and no gossip to take
	}
	p, ok := parse(pkt)
	if p.proto == protoGossip || p.hidden {
		f.takeGossip(&p, ok)
		return false
	}
	if t.self == nil {
		return true
	}
	if !ok && t.enforce {
		f.Dropped[DropMalformed].Add(1)
		return false
	}
	sender := t.members[p.src]
	if sender == nil {
		return true // a static peer's: the network's policy is not about it
	}
	if !t.enforce {
		if !t.self.holds(p.dst) {
			f.Dropped[DropDestination].Add(1)
			return false
		}
		return true
	}
	now := f.clock.Load()
	// An ICMP error about a flow this machine has with the sender passes
	// when it goes where an error goes: to the flow's local end, one of
	// this member's addresses. Addressed anywhere else it is judged as any
	// packet (and dropped as to no address of ours): the flow must not
	// carry a member's packets, with whatever payload, to the LAN.
	if p.icmpError && p.dst == p.inner.local && t.self.holds(p.dst) &&
		t.members[p.inner.remote] == sender && f.ct.seen(p.inner, now, t.seq, true, 0, false) {
		return true
	}
	fl := p.inbound()
	switch {
	case p.fragment:
		if f.frags.admitted(&p, now) {
			return true // of a datagram whose first fragment was let in
		}
	case f.ct.seen(fl, now, t.seq, false, p.tcpFlags, false):
		if p.fragmented {
			f.frags.remember(&p, now)
		}
		return true
	}
	if !t.self.holds(p.dst) {
		f.Dropped[DropDestination].Add(1)
		return false
	}
	for i := range t.rules {
		if t.allows(&t.rules[i], sender, &p) {
			if !p.fragment {
				f.ct.add(fl, sender.shareKey(p.src), now, true, t.seq, p.tcpFlags)
			}
			if p.fragmented && !p.fragment {
				f.frags.remember(&p, now)
			}
			if counts := *f.allowed.Load(); i < len(counts) {
				counts[i].Add(1)
			}
			return true
		}
	}
	f.Dropped[DropNoRule].Add(1)
	return false
}

// sent notes a packet this machine sends: replies to it will pass.
func (f *Filter) sent(pkt []byte) {
	t := f.table.Load()
	if !t.enforce || isGossip(pkt) {
		return
	}
	p, ok := parse(pkt)
	if !ok || p.fragment {
		return
	}
	m := t.members[p.dst]
	if m == nil {
		return
	}
	fl, now := p.outbound(), f.clock.Load()
	if f.ct.seen(fl, now, t.seq, true, p.tcpFlags, true) {
		return
	}
	// What answers a packet opens nothing: an ICMP error, a TCP reset or
	// SYN-ACK (to a flow the table no longer has: a member past its share
	// would otherwise take this machine's part through its replies).
	if p.icmpError || p.proto == protoTCP && (p.tcpFlags&tcpRST != 0 || p.tcpFlags&(tcpSYN|tcpACK) == tcpSYN|tcpACK) {
		return
	}
	f.ct.add(fl, m.shareKey(p.dst), now, false, t.seq, p.tcpFlags)
}

// allows reports whether rule r lets p in from sender.
func (t *table) allows(r *cert.Rule, sender *Member, p *packet) bool {
	return selects(r.From, sender, p.src) && selects(r.To, t.self, p.dst) && serves(r.Allow, p)
}

func selects(sel []cert.Selector, m *Member, addr netip.Addr) bool {
	for _, s := range sel {
		switch s.Kind {
		case cert.SelectAny:
			return true
		case cert.SelectGroup:
			if slices.Contains(m.Groups, s.Label) {
				return true
			}
		case cert.SelectName:
			if m.Name == s.Label {
				return true
			}
		case cert.SelectPrefix:
			if s.Prefix.Contains(addr) {
				return true
			}
		}
	}
	return false
}

// serves reports whether a service allowed covers p. A later fragment has
// no ports: only a service of every port covers it.
func serves(allow []cert.Service, p *packet) bool {
	for _, s := range allow {
		switch {
		case s.Proto == cert.ProtoAny:
			return true
		case s.Proto != p.proto:
		case s.Proto == cert.ProtoICMP:
			return true
		case p.fragment:
			if s.From == 0 && s.To == 65535 {
				return true
			}
		case s.From <= p.dport && p.dport <= s.To:
			return true
		}
	}
	return false
}
