package control

import (
	"time"
)

// A short freeze. A process stopped for a few seconds (SIGSTOP, a VM
// paused for a snapshot, a laptop's lid closed and opened) wakes to NATs
// that still hold every mapping it had: their UDP timeouts are tens of
// seconds, and each peer's heartbeat interval is what its NATs were found
// to keep an idle mapping for. Taking such a wake-up for a new network
// (resumed) drops the direct paths for the relay and punches afresh,
// which behind a hard NAT is a birthday round: 9–12 s on the relay for a
// 5-s freeze. So a direct path idle for less than its heartbeat interval,
// the freeze included, is kept and probed (Suspect): a live one answers
// within a round trip, a dead one is left for the relay after
// nat.SuspectTimeout as at any silence. Longer freezes, and peers with no
// direct path, are handled as before.
//
// Meanwhile the peer that kept running found our silence and left the
// path (the tick's nat.EventLost). Our probe on the old path brings it
// back: its Punch probes back whatever probes it while it has no path.
// On the hard side of a birthday pair that path ends at the winning
// birthday socket, so losing the path keeps that socket open while its
// NAT mapping may live (lingerBirthday) instead of closing it.

// resumeAfresh sets p up as for a peer never met after a freeze or sleep
// that its NATs' mappings likely did not outlive: its direct path, if
// any, left for the relay, the last rounds' results and backoffs
// forgotten, a query at once, and a new handshake — rather than answer a
// peer's initiation from before the freeze, whose answer no longer
// matches anything it has.
func (p *peer) resumeAfresh(now time.Time) {
	direct := p.punch.Path().Addr.IsValid()
	p.punch.Forget()
	p.closeBirthday(true)
	p.nextQuery, p.backoff = now, minBackoff
	p.birthday.next, p.birthday.backoff = time.Time{}, minBirthdayBackoff
	if direct {
		p.updateRoute(now, "resumed after a freeze or sleep: the NATs' mappings are likely gone")
	}
	p.deps.wg.Rehandshake(p.key)
}

// lingerBirthday follows the loss of p's direct path: the winning birthday
// socket it ran through stays open (the others close) for as long as its
// NAT mapping may live, p's heartbeat interval, so that a peer that was
// only frozen and probes the old path finds it. A new round towards the
// same endpoint takes it along (maybeBirthday); tickBirthday closes it
// when the time is up and the path did not come back on it.
func (p *peer) lingerBirthday(now time.Time) {
	bd := p.birthday.round
	if bd == nil || bd.won == nil {
		p.closeBirthday(true)
		return
	}
	bd.lingerUntil = now.Add(p.punch.Heartbeat())
}

// lingering reports whether bd's winner is kept after its path was lost
// and its time is not up at now; it clears the mark once the path is back
// on that socket.
func (p *peer) lingering(bd *birthday, now time.Time) bool {
	if bd.lingerUntil.IsZero() {
		return false
	}
	if p.punch.Path().Addr == bd.dst {
		bd.lingerUntil = time.Time{} // back on it
		return false
	}
	return !now.After(bd.lingerUntil)
}
