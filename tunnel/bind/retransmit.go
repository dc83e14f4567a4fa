package bind

import (
	"bytes"
	"time"
)

// Lost first handshakes. wireguard-go makes a new initiation only 5 s
// after the last (RekeyTimeout), however it is asked, so a first contact
// whose initiation or response is lost waits those 5 s — or 15, when the
// retry is lost too. The single copy of each message (sendHandshakes)
// covers one loss, not a burst: a path's first packets are the likeliest
// lost (a NAT mapping not yet open, a relay that does not know the peer
// yet, a router's full queue). So the Bind keeps the handshake going
// itself, with WireGuard's own bytes:
//
//   - The initiator sends its unanswered initiation again every round
//     trip or two (retryInterval), on whatever route the peer has then,
//     until the answer comes, WireGuard makes a new one, or resendWindow
//     passes. A copy the responder already took it drops (admitHandshake).
//   - The responder, given such a copy of an initiation it answered, takes
//     it for a sign that its response was lost and sends that again (at
//     most every minRetry): WireGuard cannot, the copy is a replay to it.
//     A response that did arrive is dropped as a copy on the other side.

const (
	// minRetry is the least spacing of the copies of an unanswered
	// initiation, and of the responses sent again: longer than a round
	// trip on a near path, short enough that a first contact that lost
	// its first messages still answers within a second.
	minRetry = 100 * time.Millisecond
	// maxRetry bounds the spacing on a slow path, whose handshake round
	// trip is known from an earlier handshake.
	maxRetry = time.Second
)

// retryInterval is how long pe's initiation may go unanswered before it
// is sent again: two handshake round trips, once one is known.
func (pe *PeerEndpoint) retryInterval() time.Duration {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	return min(max(2*pe.hs.rtt, minRetry), maxRetry)
}

// unanswered reports whether init is still pe's latest initiation and can
// still make a session (pending).
func (pe *PeerEndpoint) unanswered(init []byte) bool {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	hs := &pe.hs
	return bytes.Equal(hs.last[0], init) && hs.pending()
}

// retransmit sends pe's initiation init, which left at sent (or was held
// then), again every retryInterval while it stays unanswered, within
// resendWindow of sent. The same initiation sent again on a new route
// (takeHandshakes) keeps the one series going.
func (pe *PeerEndpoint) retransmit(init []byte, sent time.Time) {
	b := pe.b
	pe.mu.Lock()
	going := bytes.Equal(pe.hs.retrying, init)
	if !going {
		pe.hs.retrying = init
	}
	pe.mu.Unlock()
	if b == nil || going {
		return
	}
	var again func()
	again = func() {
		if time.Since(sent) >= resendWindow || !pe.unanswered(init) {
			pe.mu.Lock()
			if bytes.Equal(pe.hs.retrying, init) {
				pe.hs.retrying = nil
			}
			pe.mu.Unlock()
			return
		}
		if r := pe.route.Load(); r != nil {
			b.sendRoute([][]byte{init}, pe, r, time.Now())
		}
		b.later(pe.retryInterval(), again)
	}
	b.later(pe.retryInterval(), again)
}

// reanswer follows a copy of the peer's initiation that pe already let
// through (dropped as a copy): if pe's latest response answers it, that
// response was lost, and goes again the way the first went.
func (pe *PeerEndpoint) reanswer(init []byte, now time.Time) {
	b := pe.b
	if b == nil || init[0] != wireGuardInitiation {
		return
	}
	pe.mu.Lock()
	hs := &pe.hs
	resp := hs.last[1]
	if !bytes.Equal(init, hs.admitted[0]) || !answers(resp, init) || now.Sub(hs.reansweredAt) < minRetry || now.Sub(hs.lastAt[1]) < minRetry {
		pe.mu.Unlock()
		return
	}
	hs.reansweredAt = now
	resp = bytes.Clone(resp)
	pe.mu.Unlock()
	// Not on the receiving goroutine: a TCP stream's write may block.
	b.later(0, func() {
		r, now := pe.route.Load(), time.Now()
		if via := pe.replyPath(resp, r, now); via != nil {
			r = via
		}
		if r != nil {
			b.sendRoute([][]byte{resp}, pe, r, now)
		}
	})
}
