package nat

import (
	"crypto/rand"
	"net/netip"
	"slices"
	"time"
)

const (
	// PunchDuration is how long one round probes a peer's candidates.
	PunchDuration = 10 * time.Second
	// ShortPunchDuration is enough for a path on a shared LAN, or through
	// a NAT that behaves better than it said; rounds where the NATs rule
	// out a direct path take no longer.
	ShortPunchDuration = 3 * time.Second
	// PunchInterval spaces the probes of a round: fast enough that a path
	// is found within a round trip or two of both NATs opening, slow enough
	// that a round sends at most 50 probes per candidate.
	PunchInterval = 200 * time.Millisecond
	// UpgradeWindow keeps a round probing this long after a public path is
	// confirmed, for a LAN path to win if there is one.
	UpgradeWindow = time.Second
	// HeartbeatInterval keeps an idle path's NAT mappings alive: below the
	// 30 s that conntrack keeps an unreplied UDP flow. A NAT that forgets
	// sooner (carrier and mobile NATs, 20 s and less) shows it: a heartbeat
	// goes unanswered until a retry. Twice in a row, and the interval
	// shrinks by a third, down to MinHeartbeatInterval, so that the
	// mappings stay up and an idle tunnel's first packet gets through
	// (see heartbeat).
	HeartbeatInterval    = 25 * time.Second
	MinHeartbeatInterval = 5 * time.Second
	// followerDelay makes the peer with the greater key wait longer before
	// its heartbeat, so that on a healthy path only one side sends them.
	followerDelay = 5 * time.Second
	// PathTimeout declares a path dead when a heartbeat goes unanswered
	// for this long.
	PathTimeout = 10 * time.Second
	// SuspectTimeout drops a path on which traffic went unanswered (see
	// Suspect) when its probes stay unanswered this long too.
	SuspectTimeout = 2 * time.Second
	retryInterval  = time.Second
	pingLifetime   = 10 * time.Second
	// FailedRoundBackoff spaces rounds that would probe again the very
	// candidates a round just probed in vain, doubling up to
	// MaxFailedRoundBackoff: a rendezvous introduces both peers again at
	// each one's query, and two peers that cannot reach each other (two
	// homes behind one carrier NAT that does not hairpin) must not punch
	// at every one.
	FailedRoundBackoff    = 10 * time.Second
	MaxFailedRoundBackoff = 5 * time.Minute
)

// Birthday punching, for an easy NAT facing a hard one. The hard side opens
// BirthdaySockets sockets, each sending to the easy side's public endpoint,
// so that its NAT holds that many mappings towards it, on ports nobody can
// predict; the easy side probes random ports of the hard side's public
// address. With 256 mappings among the 64512 ports Linux and most routers
// pick from, 2048 probes miss them all with a probability of e^-8 (0.03%).
// The probes are paced at SprayRate, 4 s in all, about 60 KB/s: a burst no
// rate limiter mistakes for a flood, and rounds are spaced by the caller.
const (
	BirthdaySockets = 256
	SprayProbes     = 2048
	SprayRate       = 512 // probes per second
	// sprayPorts is the range NATs pick random ports from.
	sprayMinPort = 1024
)

// Path is a confirmed way to a peer.
type Path struct {
	Addr  netip.AddrPort
	Kind  PathKind
	RTT   time.Duration
	Since time.Time     // when it was chosen
	Took  time.Duration // from the start of the round to its confirmation
}

// Event is what a Punch tells its owner.
type Event int

const (
	EventNone   Event = iota
	EventChosen       // Path() is new
	EventLost         // no path any more
)

// Punch is the hole-punching and path-keeping state for one peer. It is a
// plain state machine: its owner feeds it intros, probes and clock ticks,
// and it sends probes through send and reports path changes. Not safe for
// concurrent use.
type Punch struct {
	send      func(dst netip.AddrPort, m Probe)
	leader    bool
	heartbeat heartbeat // the leader's; the follower waits followerDelay more

	candidates []netip.AddrPort
	pings      map[[12]byte]sentPing
	started    time.Time
	deadline   time.Time // the round probes until then
	next       time.Time
	chosen     bool // a path was confirmed in this round
	// tried: the candidates of the last round that found nothing, and
	// when the same may be tried again (see StartIfNew).
	tried        []netip.AddrPort
	retryAt      time.Time
	retryBackoff time.Duration

	path      Path
	lastHeard time.Time // last authenticated probe or answer on the path
	lastData  time.Time // WireGuard's last packet either way but keepalives (SawData)
	// The owner's last packet from the peer, and either way, WireGuard's
	// keepalives and handshakes included (SawTraffic).
	lastReceived, lastTraffic time.Time
	lastPing                  time.Time // last probe sent on the path
	suspect                   time.Time // when traffic on the path was last seen going unanswered
	// suspectFor is how long a suspect path may stay unanswered:
	// SuspectTimeout, or less for SuspectNow.
	suspectFor time.Duration

	// A birthday spray in progress: random ports of sprayIP.
	sprayIP    netip.Addr
	sprayStart time.Time
	spraySent  int
}

type sentPing struct {
	to netip.AddrPort
	at time.Time
}

// A Probe is what a Punch sends: a probe of a path, or the answer to one
// of the peer's, which says where that probe came from (Src). TxID pairs
// an answer with its probe. The owner carries it in its protocol, sealed
// (punchtun's are wire.Ping and wire.Pong).
type Probe struct {
	TxID   [12]byte
	Answer bool
	Src    netip.AddrPort // of an answer
}

// maxCandidates bounds the addresses one round probes: those of the
// peer's introduction and those its probes came from.
const maxCandidates = 32

// NewPunch returns the state for one peer. leader is true on the side with
// the smaller key, which sends the heartbeats.
func NewPunch(leader bool, send func(dst netip.AddrPort, m Probe)) *Punch {
	return &Punch{send: send, leader: leader, pings: make(map[[12]byte]sentPing)}
}

// Path returns the current path; its Kind is PathNone when there is none.
func (p *Punch) Path() Path { return p.path }

// Candidates returns the addresses the current or last round probed.
func (p *Punch) Candidates() []netip.AddrPort { return p.candidates }

// Punching reports whether a round is in progress.
func (p *Punch) Punching(now time.Time) bool { return now.Before(p.deadline) }

// Start begins a round of length d: probe every candidate at once, and
// again every PunchInterval. The current path, if any, carries traffic until the round
// confirms one; the first candidate confirmed becomes the path, and a LAN
// path replaces a public one.
func (p *Punch) Start(now time.Time, candidates []netip.AddrPort, d time.Duration) {
	p.candidates = p.candidates[:0]
	for _, c := range candidates {
		p.addCandidate(c)
	}
	if p.path.Addr.IsValid() {
		p.addCandidate(p.path.Addr)
	}
	p.started, p.deadline, p.next = now, now.Add(d), now
	p.chosen = false
	if !slices.Equal(candidates, p.tried) {
		p.tried, p.retryAt, p.retryBackoff = slices.Clone(candidates), time.Time{}, 0
	}
}

// StartIfNew starts a round as Start does, unless candidates are those of
// the last round, which found nothing, and FailedRoundBackoff (doubling)
// has not passed since. It reports whether a round started. New
// candidates, or a path to check, always start one.
func (p *Punch) StartIfNew(now time.Time, candidates []netip.AddrPort, d time.Duration) bool {
	if !p.path.Addr.IsValid() && slices.Equal(candidates, p.tried) {
		if now.Before(p.deadline) {
			return false // a round of these is still on
		}
		if !p.deadline.IsZero() {
			p.endRound(now) // it ended since the last Tick
		}
		if now.Before(p.retryAt) {
			return false
		}
	}
	p.Start(now, candidates, d)
	return true
}

// endRound closes the round whose deadline passed; one that confirmed
// nothing puts its candidates off for a while (StartIfNew).
func (p *Punch) endRound(now time.Time) {
	p.deadline = time.Time{}
	if !p.chosen {
		p.retryBackoff = min(max(2*p.retryBackoff, FailedRoundBackoff), MaxFailedRoundBackoff)
		p.retryAt = now.Add(p.retryBackoff)
	}
}

// RetryAt is when StartIfNew will try the last round's candidates again;
// zero when the last round did not fail.
func (p *Punch) RetryAt() time.Time { return p.retryAt }

func (p *Punch) addCandidate(c netip.AddrPort) bool {
	if !c.IsValid() || c.Port() == 0 || slices.Contains(p.candidates, c) || len(p.candidates) >= maxCandidates {
		return false
	}
	p.candidates = append(p.candidates, c)
	return true
}

// Spray starts probing random ports of ip, the public address of a peer
// behind a hard NAT, for the easy side of a birthday punch. It extends the
// round to cover the spray.
func (p *Punch) Spray(now time.Time, ip netip.Addr) {
	p.sprayIP, p.sprayStart, p.spraySent = ip, now, 0
	if end := now.Add(SprayProbes * time.Second / SprayRate); p.deadline.Before(end) {
		p.deadline = end
	}
}

// Spraying reports whether a spray is in progress.
func (p *Punch) Spraying() bool { return p.sprayIP.IsValid() }

// spray sends the probes due by now, paced at SprayRate.
func (p *Punch) spray(now time.Time) {
	if !p.sprayIP.IsValid() {
		return
	}
	if p.chosen {
		p.sprayIP = netip.Addr{} // a path was found: stop
		return
	}
	due := min(int(now.Sub(p.sprayStart)*SprayRate/time.Second)+1, SprayProbes)
	var r [2]byte
	for ; p.spraySent < due; p.spraySent++ {
		rand.Read(r[:])
		port := sprayMinPort + uint16(int(r[0])<<8|int(r[1]))%(65535-sprayMinPort+1)
		p.ping(netip.AddrPortFrom(p.sprayIP, port), now)
	}
	if p.spraySent == SprayProbes {
		p.sprayIP = netip.Addr{}
	}
}

// Probe sends one probe to to now, outside the round's schedule: to answer
// a probe that arrived a new way, or to open a mapping.
func (p *Punch) Probe(now time.Time, to netip.AddrPort) { p.ping(to, now) }

// Tick does what is due at now.
func (p *Punch) Tick(now time.Time) Event {
	for tx, s := range p.pings {
		if now.Sub(s.at) > pingLifetime {
			delete(p.pings, tx)
		}
	}
	p.spray(now)
	if ev, done := p.checkSuspect(now); done {
		return ev
	}
	if now.Before(p.deadline) && !now.Before(p.next) {
		for _, c := range p.candidates {
			p.ping(c, now)
		}
		p.next = now.Add(PunchInterval)
	}
	if !p.deadline.IsZero() && !now.Before(p.deadline) {
		p.endRound(now)
		if !p.chosen && p.path.Addr.IsValid() {
			// The round ended and nothing answered, the old path included.
			return p.lose()
		}
	}
	if !p.path.Addr.IsValid() {
		return EventNone
	}
	return p.beat(now)
}

// Drop forgets the path: the peer is known to be elsewhere now (it
// restarted, or came back from a new public endpoint), so probing the old
// one for SuspectTimeout would only keep traffic on a dead path.
func (p *Punch) Drop() { p.lose() }

// Forget drops the path and what the last rounds found, as for a peer
// never met: after a freeze or sleep the NATs on the way forgot their
// mappings, and a round that failed before says nothing of one now.
func (p *Punch) Forget() {
	p.lose()
	p.tried, p.retryAt, p.retryBackoff = nil, time.Time{}, 0
	p.deadline = time.Time{}
}

func (p *Punch) lose() Event {
	p.path = Path{}
	p.heartbeat.drop() // no answer was a NAT's doing: the peer went
	p.suspect = time.Time{}
	return EventLost
}

// Suspect tells the Punch that what was sent on the path lately went
// unanswered: a NAT may have dropped its mapping, or a laptop moved. The
// path is probed at once and every half second, and dropped when nothing
// answers within SuspectTimeout, so traffic falls back to the relay in
// seconds rather than after a missed heartbeat.
func (p *Punch) Suspect(now time.Time) { p.suspectWithin(now, SuspectTimeout) }

// SuspectNow is Suspect when the peer itself says it has no path to us
// (it asked the rendezvous for an introduction): it probably restarted,
// and a hard NAT's peer then lost the birthday socket our path leads to,
// while the rendezvous still sees its main socket where it was. The path
// is dropped when its probes stay unanswered for eight round trips (at
// least QuickSuspectTimeout), not SuspectTimeout: a live path answers
// within one, and three probes go out meanwhile.
func (p *Punch) SuspectNow(now time.Time) {
	p.suspectWithin(now, min(max(8*p.path.RTT, QuickSuspectTimeout), SuspectTimeout))
}

// QuickSuspectTimeout is SuspectNow's least wait for an answer.
const QuickSuspectTimeout = 250 * time.Millisecond

func (p *Punch) suspectWithin(now time.Time, d time.Duration) {
	if !p.path.Addr.IsValid() {
		return
	}
	if !p.suspect.IsZero() {
		p.suspectFor = min(p.suspectFor, d) // already suspect: the sooner end
		return
	}
	p.suspect, p.suspectFor = now, d
	p.ping(p.path.Addr, now)
}

// LastHeard is when the peer was last heard on the path.
func (p *Punch) LastHeard() time.Time { return p.lastHeard }

func (p *Punch) checkSuspect(now time.Time) (Event, bool) {
	switch {
	case p.suspect.IsZero():
	case p.lastHeard.After(p.suspect):
		p.suspect = time.Time{}
	case now.Sub(p.suspect) > p.suspectFor:
		return p.lose(), true
	case now.Sub(p.lastPing) >= min(retryInterval/2, p.suspectFor/3):
		p.ping(p.path.Addr, now)
	}
	return EventNone, false
}

func (p *Punch) ping(to netip.AddrPort, now time.Time) { p.send(to, p.NewProbe(now, to)) }

// NewProbe returns a probe for to, whose answer will count, for a caller
// that sends it another way than the Punch's send.
func (p *Punch) NewProbe(now time.Time, to netip.AddrPort) Probe {
	var tx [12]byte
	rand.Read(tx[:])
	p.pings[tx] = sentPing{to: to, at: now}
	if to == p.path.Addr {
		p.lastPing = now
	}
	return Probe{TxID: tx}
}

// OnPing answers an authenticated probe from the peer. A probe from an
// address the round did not know (the peer's NAT mapped it somewhere new)
// is probed back at once: the peer's packet has just opened our NAT for it.
func (p *Punch) OnPing(now time.Time, src netip.AddrPort, tx [12]byte) {
	p.send(src, Probe{TxID: tx, Answer: true, Src: src})
	if src == p.path.Addr {
		p.pingedOnPath(now)
		return
	}
	// Without a path, every authenticated probe is probed back, not only
	// the first from a source: that first answer may have been lost (the
	// hard side's birthday socket takes our probes only once it has won),
	// and the peer's probes keep showing where it can be reached.
	added := p.addCandidate(src)
	if !p.path.Addr.IsValid() || added && now.Before(p.deadline) {
		p.ping(src, now)
	}
}

// OnPong takes an authenticated answer from the peer. Only answers to our
// own probes count, so a stranger, or a host on another LAN that happens to
// have the peer's private address, never becomes a path.
func (p *Punch) OnPong(now time.Time, src netip.AddrPort, tx [12]byte) Event {
	sent, ok := p.pings[tx]
	if !ok {
		return EventNone
	}
	delete(p.pings, tx)
	rtt := now.Sub(sent.at)
	kind := KindOf(src)
	if src == p.path.Addr {
		p.heardOnPath(now)
		p.path.RTT = rtt
		if !p.chosen {
			p.chosen = true
			p.narrowRound(now)
		}
		return EventNone
	}
	if p.chosen && kind <= p.path.Kind {
		return EventNone
	}
	p.chosen = true
	p.retryAt, p.retryBackoff = time.Time{}, 0
	p.path = Path{Addr: src, Kind: kind, RTT: rtt, Since: now, Took: now.Sub(p.started)}
	p.lastHeard = now
	p.heartbeat.drop() // one under way was the old path's
	p.narrowRound(now)
	return EventChosen
}

// narrowRound ends the round early once nothing better can come: at once
// for a LAN path, after UpgradeWindow for a public one.
func (p *Punch) narrowRound(now time.Time) {
	end := now.Add(UpgradeWindow)
	if p.path.Kind == PathLAN {
		end = now
	}
	if end.Before(p.deadline) {
		p.deadline = end
	}
}
