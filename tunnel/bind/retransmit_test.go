package bind

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// countingStd is a conn.Bind under the real Bind that counts what it sends
// by message type; the Bind's timers send from their own goroutines.
type countingStd struct {
	fakeStd
	mu     sync.Mutex
	byType map[byte]int
}

func (f *countingStd) Send(bufs [][]byte, ep conn.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range bufs {
		f.byType[b[0]]++
	}
	return nil
}

func (f *countingStd) count(typ byte) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byType[typ]
}

// waitFor polls until n messages of typ were sent or limit passed, and
// returns how many were.
func (f *countingStd) waitFor(typ byte, n int, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	for f.count(typ) < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return f.count(typ)
}

// newCountingBind is a Bind of key local with one peer, key{2}, on a
// direct route.
func newCountingBind(t *testing.T, local key.Key) (*Bind, *countingStd, *PeerEndpoint, netip.AddrPort) {
	b := New(local, link.Discard)
	t.Cleanup(func() { b.Close() })
	std := &countingStd{byType: map[byte]int{}}
	b.std = std
	pe := b.PeerEndpoint(key.Key{2})
	src := netip.MustParseAddrPort("203.0.113.22:4000")
	pe.SetRoute(link.Route{Dst: src, Via: b.Shared()})
	return b, std, pe, src
}

// TestUnansweredInitiationSentAgain: an initiation with no answer goes
// again every minRetry (no round trip known yet), not once only, and stops
// at its answer.
func TestUnansweredInitiationSentAgain(t *testing.T) {
	b, std, pe, src := newCountingBind(t, key.Key{1})
	b.Send([][]byte{handshakeMsg(wireGuardInitiation, 1)}, pe) // sender index 1
	if got := std.waitFor(wireGuardInitiation, 4, 5*time.Second); got < 4 {
		t.Fatalf("%d initiations sent in 5 s, want 4 or more within half a second", got)
	}
	resp := handshakeMsg(wireGuardResponse, 9)
	resp[8] = 1
	if !pe.received(resp, src, false) {
		t.Fatal("the answer was refused")
	}
	n := std.count(wireGuardInitiation)
	time.Sleep(3 * minRetry) // absence can only be shown by waiting
	if got := std.count(wireGuardInitiation); got > n+1 {
		t.Fatalf("%d initiations sent after the answer, want at most the one under way", got-n)
	}
}

// TestLostResponseSentAgain: a copy of an initiation the responder already
// answered means its response was lost: the response goes again, at most
// once every minRetry; WireGuard itself never sees the copy.
func TestLostResponseSentAgain(t *testing.T) {
	b, std, pe, src := newCountingBind(t, key.Key{1})
	init := handshakeMsg(wireGuardInitiation, 7) // sender index 7
	now := time.Now()
	if !pe.received(init, src, false) {
		t.Fatal("the initiation was refused")
	}
	resp := handshakeMsg(wireGuardResponse, 3)
	resp[8] = 7
	b.Send([][]byte{resp}, pe)
	time.Sleep(minRetry)
	if pe.received(init, src, false) {
		t.Fatal("the copy of the initiation went on to WireGuard")
	}
	pe.received(init, src, false) // a second copy at once: not answered again
	want := 2
	if got := std.waitFor(wireGuardResponse, want, time.Until(now.Add(time.Second))); got < want {
		t.Fatalf("%d responses sent, want %d: the lost one went not again", got, want)
	}
	time.Sleep(minRetry / 2) // before the response's own copy (handshakeCopyDelay)
	if got := std.count(wireGuardResponse); got != want {
		t.Fatalf("%d responses sent, want %d", got, want)
	}
}

// TestCrossedInitiationNotSentAgain: once this side answered the peer's
// initiation (crossed initiations: the leader drops ours and its copies),
// ours is not sent again.
func TestCrossedInitiationNotSentAgain(t *testing.T) {
	b, std, pe, src := newCountingBind(t, key.Key{3}) // the follower
	b.Send([][]byte{handshakeMsg(wireGuardInitiation, 1)}, pe)
	if !pe.received(handshakeMsg(wireGuardInitiation, 7), src, false) {
		t.Fatal("the peer's initiation was refused")
	}
	resp := handshakeMsg(wireGuardResponse, 3)
	resp[8] = 7
	b.Send([][]byte{resp}, pe)
	n := std.count(wireGuardInitiation)
	time.Sleep(3 * minRetry) // absence can only be shown by waiting
	if got := std.count(wireGuardInitiation); got > n+1 {
		t.Fatalf("%d initiations sent after we answered the peer's, want at most the one under way", got-n)
	}
}

// TestInitiationSentAgainOnce: the initiation sent again on a new route
// keeps its one series of copies going, not a second beside it.
func TestInitiationSentAgainOnce(t *testing.T) {
	b, std, pe, src := newCountingBind(t, key.Key{1})
	b.Send([][]byte{handshakeMsg(wireGuardInitiation, 1)}, pe)
	time.Sleep(handshakeCopyDelay + minRetry/2)
	pe.SetRoute(link.Route{Dst: src, Via: b.Shared()}) // a new route: the initiation goes on it at once
	n := std.count(wireGuardInitiation)
	window := 5 * minRetry
	time.Sleep(window) // the rate can only be seen over time
	if got, most := std.count(wireGuardInitiation)-n, int(window/minRetry)+1; got > most {
		t.Fatalf("%d initiations in %v after the new route, want at most %d: two series of copies", got, window, most)
	}
}
