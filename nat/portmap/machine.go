package portmap

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

const (
	// Lifetime is what a mapping is asked for; it is renewed at half.
	Lifetime = 2 * time.Hour
	// AskTimeout bounds one ask: a gateway that has not answered by then
	// is taken for none. Nothing waits for it: the tunnel starts at once,
	// and offers the mapping when it comes.
	AskTimeout = 2 * time.Second
	// A gateway that answered nothing, or refused, is asked again after
	// retryMin, doubling up to retryMax; a renewal that went unanswered
	// after renewRetry, while the mapping lasts.
	retryMin   = 30 * time.Second
	retryMax   = 10 * time.Minute
	renewRetry = 5 * time.Second
)

// Outcomes counted per protocol (Machine.Counts).
const (
	OutcomeMapped    = "mapped"     // a new mapping
	OutcomeRenewed   = "renewed"    // the same mapping, renewed
	OutcomeRefused   = "refused"    // the router refused (its result code in status)
	OutcomeNoAnswer  = "no_answer"  // the gateway did not answer in time
	OutcomeFailed    = "failed"     // another error (bad answer, no WAN service)
	OutcomeDoubleNAT = "double_nat" // mapped, but behind another NAT: not offered
)

// Machine is the life of the tunnel socket's mapping, with no I/O: the
// caller asks the router when Tick says so (Client.MapAny, bounded by
// AskTimeout), reports the outcome with Answered, and tells it of network
// changes, resumes, announcements and our public address. Offer is the
// endpoint to offer peers, if any.
type Machine struct {
	mode     Mode
	current  *Mapping
	obtained time.Time // when current was granted or last renewed
	asking   bool
	next     time.Time // when the next ask is due
	// announcedAt is when the latest announcement was taken.
	announcedAt time.Time
	backoff     time.Duration
	reason      string     // why there is no mapping
	public      netip.Addr // our public address, as the rendezvous sees it
	counts      map[Protocol]map[string]uint64
	reported    string // the double NAT last counted, so that it is counted once
	// epochs are the routers' last epochs (NAT-PMP, PCP), to tell a
	// restart by; restarts counts those seen.
	epochs   map[epochKey]epochMark
	restarts uint64
}

type epochKey struct {
	gw netip.Addr
	p  Protocol
}

type epochMark struct {
	epoch uint32
	at    time.Time
}

// NewMachine starts with an ask due at once (unless mode is off).
func NewMachine(mode Mode) *Machine {
	m := &Machine{mode: mode, counts: map[Protocol]map[string]uint64{}, epochs: map[epochKey]epochMark{}}
	m.reason = "asking the gateway"
	if mode == ModeOff {
		m.reason = "port mapping is off"
	}
	return m
}

// Mode is the protocols it asks.
func (m *Machine) Mode() Mode { return m.mode }

// Tick reports whether an ask is due at now, and if so marks it under
// way; prev is the mapping to renew (nil: ask all the mode's protocols).
func (m *Machine) Tick(now time.Time) (ask bool, prev *Mapping) {
	if m.mode == ModeOff || m.asking || now.Before(m.next) {
		return false, nil
	}
	if m.current != nil && !now.Before(m.obtained.Add(m.current.Lifetime)) {
		m.current = nil // lapsed unrenewed
		m.reason = "the mapping lapsed: no answer to its renewal"
	}
	m.asking = true
	return true, m.current
}

// Answered takes the outcome of the ask Tick started: the mapping got, or
// each protocol's error. changed: the endpoint to offer may have changed.
func (m *Machine) Answered(now time.Time, got *Mapping, errs map[Protocol]error) (changed bool) {
	m.asking = false
	if got != nil {
		outcome := OutcomeMapped
		restarted := m.restarted(now, got)
		// The other protocols' forwards are answers of this ask only when
		// it was a fresh one: a renewal carries them over from the first
		// ask, with that ask's epochs.
		if m.current == nil {
			for i := range got.also {
				restarted = m.restarted(now, &got.also[i]) || restarted
			}
		}
		if restarted {
			// The router lost its state: what it granted is a new forward,
			// and the other protocols' ones it held for us are gone.
			got.also = nil
		} else if m.current != nil && m.current.Protocol == got.Protocol && m.current.External.Port() == got.External.Port() {
			outcome = OutcomeRenewed
		}
		m.count(got.Protocol, outcome)
		changed = m.current == nil || m.current.External != got.External
		m.current, m.obtained, m.reason, m.backoff = got, now, "", 0
		m.next = now.Add(got.Lifetime / 2)
		return changed
	}
	for _, p := range Protocols {
		if err, ok := errs[p]; ok {
			m.count(p, outcomeOf(err))
		}
	}
	if m.current != nil {
		var refused *RefusedError
		if end := m.obtained.Add(m.current.Lifetime); !errors.As(errs[m.current.Protocol], &refused) && now.Before(end) {
			m.next = now.Add(min(renewRetry, end.Sub(now))) // unanswered: keep it while it lasts
			return false
		}
		// Refused: the router forgot it, or will not renew it. Ask all
		// protocols afresh at once.
		m.current, m.next = nil, now
		m.reason = reasonOf(errs)
		return true
	}
	m.reason = reasonOf(errs)
	m.backoff = min(max(2*m.backoff, retryMin), retryMax)
	m.next = now.Add(m.backoff)
	return false
}

// restarted compares the epoch of an answer with the last from the same
// router and protocol (RFC 6886 §3.6, RFC 6887 §8.5): a router that kept
// running counts at least 7/8 of the seconds we did, less 2 s of slack;
// one whose epoch is below that restarted and lost its mappings.
func (m *Machine) restarted(now time.Time, got *Mapping) bool {
	if got.Protocol != NATPMP && got.Protocol != PCP {
		return false // UPnP has no epoch
	}
	k := epochKey{got.Gateway, got.Protocol}
	last, seen := m.epochs[k]
	m.epochs[k] = epochMark{got.Epoch, now}
	if !seen {
		return false
	}
	elapsed := max(now.Sub(last.at), 0)
	if int64(got.Epoch) >= int64(last.epoch)+int64(elapsed*7/8/time.Second)-2 {
		return false
	}
	m.restarts++
	return true
}

// Restarts is how many times a router's epoch told of its restart.
func (m *Machine) Restarts() uint64 { return m.restarts }

// Reask asks again at once: the network changed or the host resumed
// (forget: the mapping was the old network's), or the router announced a
// restart.
func (m *Machine) Reask(now time.Time, forget bool) (changed bool) {
	if m.mode == ModeOff {
		return false
	}
	m.next, m.backoff = now, 0
	if forget && m.current != nil {
		m.current, m.reason = nil, "asking the gateway"
		return true
	}
	return false
}

// Announced takes a gateway's unsolicited announcement: a restart, or an
// address change. Either may have lost our mapping: it is renewed at once,
// but at most once every announceGap — anyone on the LAN can send one in
// the gateway's name, and a router repeats its own for seconds (RFC 6886
// §3.2.1). taken: it started an ask.
func (m *Machine) Announced(now time.Time) (taken bool) {
	if m.mode == ModeOff || !m.announcedAt.IsZero() && now.Sub(m.announcedAt) < announceGap {
		return false
	}
	m.announcedAt, m.next = now, now
	return true
}

// announceGap is the least time between two announcements taken.
const announceGap = 2 * time.Second

// SetPublic tells our public address as the rendezvous sees it.
// changed: the offer may have changed.
func (m *Machine) SetPublic(a netip.Addr) (changed bool) {
	changed, m.public = m.public != a, a
	return changed
}

// Current is the mapping held (nil: none), to delete on the way down.
func (m *Machine) Current() *Mapping { return m.current }

// Offer is the endpoint peers can reach us at through the mapping: none
// while our public address is unknown, or when the router's address is
// not it (a second NAT outside the router: the forward leads nowhere).
func (m *Machine) Offer() (netip.AddrPort, bool) {
	if m.current == nil || !m.public.IsValid() {
		return netip.AddrPort{}, false
	}
	ext := m.current.External
	if !ext.Addr().IsValid() {
		// The router would not say its address (UPnP): STUN's stands in.
		return netip.AddrPortFrom(m.public, ext.Port()), true
	}
	if ext.Addr() != m.public {
		if key := ext.String() + m.public.String(); m.reported != key {
			m.reported = key
			m.count(m.current.Protocol, OutcomeDoubleNAT)
		}
		return netip.AddrPort{}, false
	}
	return ext, true
}

// Status is the mapping as `punchtun status` shows it.
type Status struct {
	Mode     string   `json:"mode"`
	Protocol Protocol `json:"protocol,omitempty"`
	External string   `json:"external,omitempty"`
	// LifetimeLeft is in whole seconds.
	LifetimeLeft int64 `json:"lifetime_left_s,omitempty"`
	// Offered: peers are told the external endpoint.
	Offered bool `json:"offered"`
	// Reason says why there is no mapping, or why it is not offered.
	Reason string `json:"reason,omitempty"`
}

// Status describes the mapping at now.
func (m *Machine) Status(now time.Time) Status {
	st := Status{Mode: m.mode.String(), Reason: m.reason}
	if m.current == nil {
		return st
	}
	st.Protocol = m.current.Protocol
	st.External = m.current.External.String()
	if !m.current.External.Addr().IsValid() {
		st.External = fmt.Sprintf("?:%d", m.current.External.Port())
	}
	st.LifetimeLeft = int64(max(m.obtained.Add(m.current.Lifetime).Sub(now), 0) / time.Second)
	ep, ok := m.Offer()
	switch {
	case ok:
		st.Offered, st.External, st.Reason = true, ep.String(), ""
	case !m.public.IsValid():
		st.Reason = "waiting for our public address"
	default:
		st.Reason = fmt.Sprintf("double NAT: the mapped address %s is not our public address %s", m.current.External.Addr(), m.public)
	}
	return st
}

// Counts are the asks' outcomes by protocol and outcome.
func (m *Machine) Counts() map[Protocol]map[string]uint64 { return m.counts }

func (m *Machine) count(p Protocol, outcome string) {
	if m.counts[p] == nil {
		m.counts[p] = map[string]uint64{}
	}
	m.counts[p][outcome]++
}

func outcomeOf(err error) string {
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		return OutcomeRefused
	case errors.Is(err, ErrNoAnswer), errors.Is(err, ErrNoGateway):
		return OutcomeNoAnswer
	}
	return OutcomeFailed
}

// reasonOf says in plain words why no protocol mapped: a refusal first
// (with its result code), else that none answered.
func reasonOf(errs map[Protocol]error) string {
	var other error
	for _, p := range Protocols {
		err := errs[p]
		var refused *RefusedError
		switch {
		case errors.As(err, &refused):
			return refused.Error()
		case errors.Is(err, ErrNoGateway):
			return "no default gateway"
		case err != nil && !errors.Is(err, ErrNoAnswer) && other == nil:
			other = fmt.Errorf("%s: %w", p, err)
		}
	}
	if other != nil {
		return other.Error()
	}
	return "no gateway answered"
}
