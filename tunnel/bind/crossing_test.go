package bind

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/testpoll"
)

// lockedStd is a fakeStd that the Bind's timers may send on while a test
// reads what was sent.
type lockedStd struct {
	mu sync.Mutex
	fakeStd
}

func (l *lockedStd) Send(bufs [][]byte, ep conn.Endpoint) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fakeStd.Send(bufs, ep)
}

// initiations is how many initiations were sent, and how many of them
// were init.
func (l *lockedStd) initiations(init []byte) (all, these int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.sent {
		if s.pkt[0] == wireGuardInitiation {
			all++
			if string(s.pkt) == string(init) {
				these++
			}
		}
	}
	return all, these
}

// crossingPair is a Bind whose control plane ticks, with one peer on a
// route; local key 1 leads peer key 2, local key 3 follows it.
func crossingPair(t *testing.T, local key.Key) (*Bind, *PeerEndpoint, *lockedStd, netip.AddrPort) {
	b := New(local, link.Discard)
	t.Cleanup(func() { b.Close() })
	std := &lockedStd{}
	b.std = std
	b.Alive(time.Now())
	pe := b.PeerEndpoint(key.Key{2})
	src := netip.MustParseAddrPort("203.0.113.22:4000")
	pe.SetRoute(link.Route{Dst: src, Via: b.Shared()})
	return b, pe, std, src
}

// TestLeadersOwnInitiationCrossingThePeers: the follower's initiation was
// let through, and the leader's WireGuard, which had made its own a
// moment before, answered it; the leader's own initiation, reaching the
// Bind just after, is never sent — neither at once nor by the Bind's
// retransmits — whether it comes after WireGuard's answer or before it
// (then it waits crossSettle for the answer). Sent, the follower would
// answer it and drop its own handshake, and the leader's answer to the
// follower would find none (seen in the lab: no session until
// WireGuard's 5-s retry).
func TestLeadersOwnInitiationCrossingThePeers(t *testing.T) {
	for _, answerFirst := range []bool{true, false} {
		b, pe, std, src := crossingPair(t, key.Key{1})
		if !pe.leader {
			t.Fatal("key 1 does not lead key 2")
		}
		theirs, ours := handshakeMsg(wireGuardInitiation, 2), handshakeMsg(wireGuardInitiation, 1)
		if !pe.received(theirs, src, false) {
			t.Fatal("the follower's initiation was dropped with no initiation of ours about")
		}
		if answerFirst {
			b.Send([][]byte{answer(theirs)}, pe)
			b.Send([][]byte{ours}, pe)
		} else {
			b.Send([][]byte{ours}, pe)
			time.Sleep(crossSettle / 10) // WireGuard's handshake worker, a moment later
			b.Send([][]byte{answer(theirs)}, pe)
		}
		time.Sleep(crossSettle + 3*minRetry) // past the wait and the retransmits: what is not sent has no event to poll for
		if all, _ := std.initiations(ours); all != 0 {
			t.Errorf("answer first %v: the leader sent %d initiations of its own after answering the follower's", answerFirst, all)
		}
		pe.mu.Lock()
		kept := pe.hs.ownDropped
		pe.mu.Unlock()
		if !kept {
			t.Errorf("answer first %v: the state does not say our initiation was kept", answerFirst)
		}
	}
}

// TestLeadersOwnInitiationAfterARefusedOne: the peer's initiation was let
// through but WireGuard never answered it (a replay, or one that came
// before WireGuard had the peer): the leader's own initiation leaves
// crossSettle later, not at once, and not never.
func TestLeadersOwnInitiationAfterARefusedOne(t *testing.T) {
	b, pe, std, src := crossingPair(t, key.Key{1})
	theirs, ours := handshakeMsg(wireGuardInitiation, 2), handshakeMsg(wireGuardInitiation, 1)
	pe.received(theirs, src, false)
	sent := time.Now()
	b.Send([][]byte{ours}, pe)
	if _, n := std.initiations(ours); n != 0 {
		t.Fatal("the leader's initiation left at once, crossSettle after the peer's was let through")
	}
	testpoll.Eventually(t, 2*time.Second, "the leader's initiation to leave", func() error {
		if _, n := std.initiations(ours); n == 0 {
			return errors.New("not sent")
		}
		return nil
	})
	if waited := time.Since(sent); waited < crossSettle {
		t.Errorf("it left after %v, before crossSettle", waited)
	}
}

// TestFollowersOwnInitiationLeaves: the follower's initiation leaves at
// once after it let the leader's through (the leader drops it: the
// crossing rule), and the leader's initiation crossWindow after the
// peer's was let through is sent at once.
func TestFollowersOwnInitiationLeaves(t *testing.T) {
	b, pe, std, src := crossingPair(t, key.Key{3})
	if pe.leader {
		t.Fatal("key 3 leads key 2")
	}
	theirs, ours := handshakeMsg(wireGuardInitiation, 2), handshakeMsg(wireGuardInitiation, 3)
	pe.received(theirs, src, false)
	b.Send([][]byte{answer(theirs)}, pe)
	b.Send([][]byte{ours}, pe)
	if _, n := std.initiations(ours); n != 1 {
		t.Errorf("the follower's initiation was sent %d times at once, want 1", n)
	}

	leader := &PeerEndpoint{peer: key.Key{2}, leader: true}
	now := time.Unix(1000, 0)
	admits(leader, theirs, nil, now)
	leader.sending([][]byte{answer(theirs)}, &route{}, now)
	if v := leader.ownCrossing(ours, now.Add(crossWindow), now.Add(crossWindow)); v != crossSend {
		t.Errorf("the leader's initiation crossWindow after the peer's: verdict %d, want sent", v)
	}
}

// TestCrossingBehindTheSideQueue: the follower's initiation came by
// another transport (TURN, a birthday socket, a TCP stream) and waits in
// the queue to WireGuard behind data: the leader's own initiation waits
// until WireGuard got the peer's, and is then dropped once WireGuard
// answered it. Counted from our Send, it left first, and WireGuard's
// answer then followed: the crossing, back (found in review).
func TestCrossingBehindTheSideQueue(t *testing.T) {
	b, pe, std, _ := crossingPair(t, key.Key{1})
	theirs, ours := handshakeMsg(wireGuardInitiation, 2), handshakeMsg(wireGuardInitiation, 1)
	b.inject(theirs, pe) // let through, queued behind a backlog
	b.Send([][]byte{ours}, pe)
	time.Sleep(2 * crossSettle) // WireGuard's receiver is busy: nothing happens to poll for
	if _, n := std.initiations(ours); n != 0 {
		t.Fatal("the leader's initiation left while the peer's waited in the queue to WireGuard")
	}
	bufs, sizes, eps := [][]byte{make([]byte, 2048)}, []int{0}, make([]conn.Endpoint, 1)
	if n, err := b.receiveSide(make(chan struct{}))(bufs, sizes, eps); n != 1 || err != nil || string(bufs[0][:sizes[0]]) != string(theirs) {
		t.Fatalf("the queue to WireGuard gave %d packets (%v), want the follower's initiation", n, err)
	}
	b.Send([][]byte{answer(theirs)}, pe) // WireGuard answers it
	time.Sleep(crossSettle + 3*minRetry)
	if _, n := std.initiations(ours); n != 0 {
		t.Errorf("the leader sent its own initiation %d times after WireGuard answered the follower's", n)
	}
}

// TestResentResponseIsNoAnswer: a response sent again on a new route is
// not WireGuard answering: after a late copy of the peer's initiation that
// WireGuard refused (a replay), the leader's new initiation is not dropped
// as one crossing an answered initiation (found in review).
func TestResentResponseIsNoAnswer(t *testing.T) {
	now := time.Unix(1000, 0)
	pe := &PeerEndpoint{peer: key.Key{2}, leader: true}
	r := &route{}
	theirs, ours := handshakeMsg(wireGuardInitiation, 2), handshakeMsg(wireGuardInitiation, 1)
	admits(pe, theirs, nil, now)
	pe.sending([][]byte{answer(theirs)}, r, now.Add(time.Millisecond))
	at := now.Add(4 * time.Second)
	pe.sending(pe.takeHandshakes(at), r, at) // a new route: the response again
	if !admits(pe, theirs, nil, now.Add(5500*time.Millisecond)) {
		t.Fatal("the late copy, past dedupeWindow, was not let through")
	}
	at = now.Add(5600 * time.Millisecond)
	pe.sending(pe.takeHandshakes(at), r, at)
	if v := pe.ownCrossing(ours, at, now.Add(5700*time.Millisecond)); v == crossDrop {
		t.Error("the leader's new initiation was dropped for a response sent again")
	}
}

// TestResumedForgetsTheWaitingInitiation: an initiation waiting for
// WireGuard's answer to the peer's when the control plane finds a freeze
// is forgotten with the other handshake messages from before (Resumed).
func TestResumedForgetsTheWaitingInitiation(t *testing.T) {
	b, pe, std, src := crossingPair(t, key.Key{1})
	theirs, ours := handshakeMsg(wireGuardInitiation, 2), handshakeMsg(wireGuardInitiation, 1)
	pe.received(theirs, src, false)
	b.Send([][]byte{ours}, pe) // waits crossSettle
	b.Resumed(time.Now().Add(time.Millisecond))
	time.Sleep(crossSettle + 3*minRetry)
	if all, _ := std.initiations(ours); all != 0 {
		t.Errorf("an initiation from before the freeze left after Resumed (%d times)", all)
	}
}

// TestInitiationSinceWakingKept: WireGuard's initiation sent the moment
// the process woke, on the direct path the freeze killed and before the
// control plane's tick found the freeze, is kept by Resumed and goes on
// the new route; the handshake messages from before the freeze do not.
// Forgotten too, it was lost, WireGuard made no other for 5 s, and the
// frozen peer answered nothing for 5 s (TestFrozenPeerBehindHardNAT
// failed so now and then).
func TestInitiationSinceWakingKept(t *testing.T) {
	b, pe, std, _ := crossingPair(t, key.Key{3})
	before, since := handshakeMsg(wireGuardInitiation, 1), handshakeMsg(wireGuardInitiation, 2)
	froze := time.Now().Add(-200 * time.Second)
	b.Alive(froze) // the last tick before the freeze
	pe.sending([][]byte{before}, &route{}, froze.Add(10*time.Millisecond))
	b.Send([][]byte{since}, pe) // on waking, on the dead direct route
	b.Resumed(time.Now())
	moved := netip.MustParseAddrPort("203.0.113.23:5000")
	pe.SetRoute(link.Route{Dst: moved, Via: b.Shared()})
	onNewRoute := func() (got []string) {
		std.mu.Lock()
		defer std.mu.Unlock()
		for _, s := range std.sent {
			if s.dst == moved {
				got = append(got, fmt.Sprintf("type %d mark %d", s.pkt[0], s.pkt[4]))
			}
		}
		return got
	}
	want := fmt.Sprintf("type %d mark 2", wireGuardInitiation)
	testpoll.Eventually(t, time.Second, "the initiation sent since waking on the new route", func() error {
		if got := onNewRoute(); len(got) == 0 || slices.ContainsFunc(got, func(g string) bool { return g != want }) {
			return fmt.Errorf("on the new route: %q, want the initiation sent since waking alone", got)
		}
		return nil
	})
}
