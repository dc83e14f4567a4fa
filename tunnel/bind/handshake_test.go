package bind

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// fakeStd is a conn.Bind under the real Bind that records what is sent.
type fakeStd struct{ sent []sentPacket }

type sentPacket struct {
	pkt []byte
	dst netip.AddrPort
}

func (f *fakeStd) Open(uint16) ([]conn.ReceiveFunc, uint16, error) { return nil, 0, nil }
func (f *fakeStd) Close() error                                    { return nil }
func (f *fakeStd) SetMark(uint32) error                            { return nil }
func (f *fakeStd) BatchSize() int                                  { return 1 }
func (f *fakeStd) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	return &conn.StdNetEndpoint{AddrPort: ap}, err
}
func (f *fakeStd) Send(bufs [][]byte, ep conn.Endpoint) error {
	for _, b := range bufs {
		f.sent = append(f.sent, sentPacket{append([]byte(nil), b...), ep.(*conn.StdNetEndpoint).AddrPort})
	}
	return nil
}

// handshakeMsg is a WireGuard message of type typ, marked by n.
func handshakeMsg(typ, n byte) []byte {
	size := 148
	if typ == wireGuardResponse {
		size = 92
	}
	p := make([]byte, size)
	p[0], p[4] = typ, n
	return p
}

// tickingBind is a Bind whose control plane ticks, with one peer.
func tickingBind() (*Bind, *PeerEndpoint) {
	b := &Bind{}
	pe := &PeerEndpoint{b: b, peer: key.Key{1}}
	b.endpoints = map[key.Key]*PeerEndpoint{pe.peer: pe}
	b.Alive(time.Now())
	return b, pe
}

// admits is admitHandshake's verdict alone.
func admits(pe *PeerEndpoint, p []byte, via *route, now time.Time) bool {
	return pe.admitHandshake(p, via, now)
}

// TestCrossedHandshakes: while its own initiation is held or left less
// than crossWindow ago, the leader drops the peer's initiation, and the
// copy of it that follows — also once its own was answered: the follower's
// held initiation leaves together with its answer to ours and may arrive
// right after it. The follower takes the leader's, and so answers it.
// crossWindow after the leader's initiation left, initiations pass.
func TestCrossedHandshakes(t *testing.T) {
	now := time.Unix(1000, 0)
	src := netip.MustParseAddrPort("203.0.113.22:4000")
	leader := &PeerEndpoint{peer: key.Key{2}, leader: true}
	follower := &PeerEndpoint{peer: key.Key{1}}
	ours, theirs := handshakeMsg(wireGuardInitiation, 1), handshakeMsg(wireGuardInitiation, 2)

	// Both hold their initiation (no route yet), then both are released.
	for _, pe := range []*PeerEndpoint{leader, follower} {
		pe.sending([][]byte{ours}, nil, now)
	}
	if admits(leader, theirs, testBind.via(leader, src, false), now) {
		t.Fatal("leader took the peer's initiation while its own was held")
	}
	if len(leader.takeHandshakes(now)) != 1 {
		t.Fatal("the held initiation was not handed to the new route")
	}
	leader.sending([][]byte{ours}, &route{}, now)
	if !admits(follower, theirs, testBind.via(follower, src, false), now) {
		t.Fatal("follower refused the leader's initiation")
	}
	if admits(leader, theirs, testBind.via(leader, src, false), now.Add(handshakeCopyDelay)) {
		t.Fatal("leader took the copy of the initiation it dropped")
	}
	// The follower's answer completes the leader's handshake.
	if !admits(leader, handshakeMsg(wireGuardResponse, 3), testBind.via(leader, src, false), now.Add(time.Millisecond)) {
		t.Fatal("leader refused the answer to its initiation")
	}
	// The follower's own initiation, released with its answer, arrives
	// right after the answer: answering it too would replace the session
	// just made on both sides (seen in the lab: 5 s to the first packet).
	if admits(leader, handshakeMsg(wireGuardInitiation, 4), testBind.via(leader, src, false), now.Add(2*time.Millisecond)) {
		t.Fatal("leader took the follower's initiation that came right after the answer to its own")
	}
	// An initiation long unanswered no longer holds the peer's back.
	leader.sending([][]byte{handshakeMsg(wireGuardInitiation, 5)}, &route{}, now)
	if !admits(leader, handshakeMsg(wireGuardInitiation, 6), testBind.via(leader, src, false), now.Add(crossWindow+time.Millisecond)) {
		t.Fatal("leader refused an initiation crossWindow after its own")
	}
}

// TestHandshakeOnNewPath: what was sent on a route that is then replaced
// goes out again on the new one: an unanswered initiation and a recent
// response; nothing after resendWindow, and no initiation once answered.
func TestHandshakeOnNewPath(t *testing.T) {
	now := time.Unix(1000, 0)
	pe := &PeerEndpoint{peer: key.Key{1}}
	init, resp := handshakeMsg(wireGuardInitiation, 1), handshakeMsg(wireGuardResponse, 2)
	pe.sending([][]byte{init}, &route{}, now)
	pe.sending([][]byte{resp}, &route{}, now)
	if got := pe.takeHandshakes(now.Add(time.Second)); len(got) != 2 || got[0][4] != 1 || got[1][4] != 2 {
		t.Fatalf("on a new path: %d messages, want the initiation and the response", len(got))
	}
	if got := pe.takeHandshakes(now.Add(resendWindow + time.Second)); len(got) != 0 {
		t.Fatalf("%d messages sent again after resendWindow", len(got))
	}
	admits(pe, answer(init), nil, now.Add(time.Millisecond))
	if got := pe.takeHandshakes(now.Add(time.Second)); len(got) != 1 || got[0][0] != wireGuardResponse {
		t.Fatalf("after the initiation was answered: %d messages, want only the response", len(got))
	}
}

// TestCrossedInitiationNotOnNewPath: the follower's initiation that
// crossed the leader's, which the follower then answered, is dead
// (WireGuard replaced the handshake it began), and is sent neither again
// nor on a new path: a peer that restarted meanwhile would answer it, and
// that answer, refused, would put off the new process's own initiation by
// 5 s (the rootless harness's restart: no session for 15 s). A response
// sent again on a new path is no new handshake, and leaves our later
// initiation going.
func TestCrossedInitiationNotOnNewPath(t *testing.T) {
	now := time.Unix(1000, 0)
	follower := &PeerEndpoint{peer: key.Key{1}}
	ours, theirs := handshakeMsg(wireGuardInitiation, 1), handshakeMsg(wireGuardInitiation, 2)
	follower.sending([][]byte{ours}, &route{}, now)
	if !admits(follower, theirs, nil, now.Add(time.Millisecond)) {
		t.Fatal("follower refused the leader's initiation")
	}
	follower.sending([][]byte{handshakeMsg(wireGuardResponse, 3)}, &route{}, now.Add(2*time.Millisecond))
	if follower.unanswered(ours) {
		t.Error("the crossed initiation is still sent again after the follower answered the leader's")
	}
	onNewPath(t, follower, now.Add(time.Second), 3) // the response alone

	// Later the follower makes an initiation of its own; its old response
	// goes again on a new path (takeHandshakes).
	later := handshakeMsg(wireGuardInitiation, 4)
	follower.sending([][]byte{later}, &route{}, now.Add(2*time.Second))
	follower.sending([][]byte{handshakeMsg(wireGuardResponse, 3)}, &route{}, now.Add(3*time.Second))
	if !follower.unanswered(later) {
		t.Error("an old response sent again stopped our initiation")
	}
	onNewPath(t, follower, now.Add(4*time.Second), 4, 3)
}

// onNewPath checks what pe sends on a new path at now: the handshake
// messages marked want (handshakeMsg's n), in order; and returns them.
func onNewPath(t *testing.T, pe *PeerEndpoint, now time.Time, want ...byte) [][]byte {
	t.Helper()
	got := pe.takeHandshakes(now)
	var marks []byte
	for _, p := range got {
		marks = append(marks, p[4])
	}
	if !bytes.Equal(marks, want) {
		t.Fatalf("on a new path: messages %v, want %v", marks, want)
	}
	return got
}

// TestCrossedWhileHeld: the follower's initiation is held (no route yet)
// when the leader's comes by the relay and WireGuard answers it: the held
// initiation is dead, and does not leave when the route comes, nor on the
// next new path; sent, it would count as a fresh one and be retried for 5 s.
func TestCrossedWhileHeld(t *testing.T) {
	now := time.Unix(1000, 0)
	follower := &PeerEndpoint{peer: key.Key{1}}
	ours, theirs := handshakeMsg(wireGuardInitiation, 1), handshakeMsg(wireGuardInitiation, 2)
	follower.sending([][]byte{ours}, nil, now)
	if !admits(follower, theirs, testBind.via(follower, netip.MustParseAddrPort("203.0.113.10:3478"), true), now.Add(time.Millisecond)) {
		t.Fatal("follower refused the leader's initiation")
	}
	follower.sending([][]byte{answer(theirs)}, nil, now.Add(2*time.Millisecond))
	got := onNewPath(t, follower, now.Add(50*time.Millisecond), 9) // the route comes: the response alone
	follower.sending(got, &route{}, now.Add(50*time.Millisecond))
	if follower.unanswered(ours) {
		t.Error("the initiation WireGuard replaced while it was held is sent again")
	}
	onNewPath(t, follower, now.Add(time.Second), 9)
}

// TestOlderAnswerLeavesLatestInFlight: the answer to an initiation that
// WireGuard has since replaced by its retry is refused by WireGuard; the
// retry is still sent again, and on a new path.
func TestOlderAnswerLeavesLatestInFlight(t *testing.T) {
	now := time.Unix(1000, 0)
	pe := &PeerEndpoint{peer: key.Key{1}}
	first, retry := handshakeMsg(wireGuardInitiation, 1), handshakeMsg(wireGuardInitiation, 2)
	pe.sending([][]byte{first}, &route{}, now)
	pe.sending([][]byte{retry}, &route{}, now.Add(5*time.Second))
	admits(pe, answer(first), nil, now.Add(5*time.Second+100*time.Millisecond)) // late, by a slow path
	if !pe.unanswered(retry) {
		t.Error("the retry is no longer sent again after the answer to the initiation before it")
	}
	onNewPath(t, pe, now.Add(6*time.Second), 2)
}

// TestReplyTheWayItCame: an initiation that came over the relay while our
// route is direct is answered over the relay too, for a moment.
func TestReplyTheWayItCame(t *testing.T) {
	now := time.Unix(1000, 0)
	relay := netip.MustParseAddrPort("203.0.113.10:3478")
	direct := &route{Route: link.Route{Dst: netip.MustParseAddrPort("203.0.113.22:4000"), Via: testBind.Shared()}}
	pe := &PeerEndpoint{peer: key.Key{1}}
	pe.route.Store(direct)
	admits(pe, handshakeMsg(wireGuardInitiation, 1), testBind.via(pe, relay, true), now)
	resp := handshakeMsg(wireGuardResponse, 2)
	if r := pe.replyPath(resp, direct, now); r == nil || !r.Relayed() || r.Dst != relay {
		t.Fatalf("reply path %+v, want the relay at %v", r, relay)
	}
	if r := pe.replyPath(resp, direct, now.Add(crossWindow+time.Millisecond)); r != nil {
		t.Fatalf("reply path %+v long after the initiation", r)
	}
	// Came the way our route goes: nothing extra.
	admits(pe, handshakeMsg(wireGuardInitiation, 3), testBind.via(pe, direct.Dst, false), now)
	if r := pe.replyPath(resp, direct, now); r != nil && r.Relayed() {
		t.Fatalf("reply path %+v for an initiation that came by our route", r)
	}
}

// TestHandshakeCopyStopsAtClose: the copy that follows a handshake message
// is not sent once the Bind is closed. Absence can only be shown by
// waiting: twice handshakeCopyDelay.
func TestHandshakeCopyStopsAtClose(t *testing.T) {
	b := New(key.Key{1}, link.Discard)
	std := &fakeStd{}
	b.std = std
	pe := b.PeerEndpoint(key.Key{2})
	pe.SetRoute(link.Route{Dst: netip.MustParseAddrPort("203.0.113.22:4000"), Via: b.Shared()})
	b.Send([][]byte{handshakeMsg(wireGuardInitiation, 1)}, pe)
	b.Close()
	time.Sleep(2 * handshakeCopyDelay)
	b.mu.Lock()
	n := len(std.sent)
	b.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d packets sent, want the initiation alone: its copy went out after Close", n)
	}
}

// TestHandshakeCopiesDeduped: a copy of a handshake message already let
// through is dropped, so that WireGuard never handles two at once: a
// response's always, an initiation's once WireGuard answered it, or when
// it comes within minRetry of the first.
func TestHandshakeCopiesDeduped(t *testing.T) {
	now := time.Unix(1000, 0)
	pe := &PeerEndpoint{peer: key.Key{1}}
	for _, typ := range []byte{wireGuardInitiation, wireGuardResponse} {
		m := handshakeMsg(typ, 7)
		if !admits(pe, m, nil, now) {
			t.Fatalf("type %d: the first copy was dropped", typ)
		}
		if admits(pe, m, nil, now.Add(minRetry/2)) {
			t.Fatalf("type %d: a copy right behind the first was let through", typ)
		}
		if typ == wireGuardInitiation {
			pe.sending([][]byte{answer(m)}, &route{}, now.Add(time.Millisecond)) // WireGuard's response
		}
		if admits(pe, m, nil, now.Add(handshakeCopyDelay)) {
			t.Fatalf("type %d: a second copy was let through", typ)
		}
		if !admits(pe, handshakeMsg(typ, 8), nil, now.Add(handshakeCopyDelay)) {
			t.Fatalf("type %d: a new message was dropped", typ)
		}
	}
}

// TestInitiationBeforeThePeer: the peer's initiation came before
// WireGuard had the peer (a member added a moment later), so WireGuard
// dropped it unanswered; a copy of it, minRetry or more later, goes on to
// WireGuard, which now answers it. Before, every copy was dropped as one
// let through, our own initiation crossed the peer's (the leader dropped
// it), and neither had a session until WireGuard's 5-s retry (seen in the
// lab, TestPolicyDestination).
func TestInitiationBeforeThePeer(t *testing.T) {
	now := time.Unix(1000, 0)
	pe := &PeerEndpoint{peer: key.Key{1}}
	init := handshakeMsg(wireGuardInitiation, 7)
	if !admits(pe, init, nil, now) {
		t.Fatal("the first initiation was dropped")
	}
	if !admits(pe, init, nil, now.Add(handshakeCopyDelay)) {
		t.Fatal("the copy of an initiation WireGuard never answered was dropped")
	}
	pe.sending([][]byte{answer(init)}, &route{}, now.Add(handshakeCopyDelay+time.Millisecond))
	if admits(pe, init, nil, now.Add(2*handshakeCopyDelay)) {
		t.Fatal("a copy of the initiation WireGuard answered was let through")
	}
}

// answer is a response to the initiation init: its receiver index is
// init's sender index.
func answer(init []byte) []byte {
	resp := handshakeMsg(wireGuardResponse, 9)
	copy(resp[8:12], init[4:8])
	return resp
}

// TestRestartedPeerAnsweredAtOnce: the leader's initiation was answered;
// the follower's held initiation that comes right after the answer is
// still dropped (crossed), and so is the copy of it, but an initiation a
// restarted follower sends later within crossWindow — past a round trip
// and restartGap after the answer — is taken at once. The copy of our
// answered initiation, sent 300 ms on, starts no new crossing window.
func TestRestartedPeerAnsweredAtOnce(t *testing.T) {
	now := time.Unix(1000, 0)
	src := netip.MustParseAddrPort("203.0.113.22:4000")
	leader := &PeerEndpoint{peer: key.Key{2}, leader: true}
	ours := handshakeMsg(wireGuardInitiation, 1) // sender index 1
	leader.sending([][]byte{ours}, &route{}, now)
	resp := handshakeMsg(wireGuardResponse, 9)
	resp[8] = 1 // receiver index: ours
	if !admits(leader, resp, testBind.via(leader, src, false), now.Add(5*time.Millisecond)) {
		t.Fatal("leader refused the answer to its initiation")
	}
	held := handshakeMsg(wireGuardInitiation, 2)
	if admits(leader, held, testBind.via(leader, src, false), now.Add(7*time.Millisecond)) {
		t.Fatal("leader took the follower's held initiation right after the answer")
	}
	leader.sending([][]byte{ours}, &route{}, now.Add(handshakeCopyDelay)) // the copy
	if admits(leader, held, testBind.via(leader, src, false), now.Add(handshakeCopyDelay+5*time.Millisecond)) {
		t.Fatal("leader took the copy of the initiation it dropped")
	}
	restarted := handshakeMsg(wireGuardInitiation, 3)
	if !admits(leader, restarted, testBind.via(leader, src, false), now.Add(500*time.Millisecond)) {
		t.Fatal("leader dropped a restarted peer's initiation 0.5 s after its handshake was answered")
	}
}

// TestStaleInitiationsAfterAFreeze: while the control plane has not ticked
// for staleAfter (the process just woke and reads its backlog), and for
// resumeWindow after it said it resumed, the peer's initiations are
// dropped and counted; Resumed forgets the handshake messages from before.
func TestStaleInitiationsAfterAFreeze(t *testing.T) {
	src := netip.MustParseAddrPort("203.0.113.22:4000")
	b, pe := tickingBind()
	if !pe.received(handshakeMsg(wireGuardInitiation, 1), src, false) {
		t.Fatal("an initiation refused while the control plane ticks")
	}
	b.Alive(time.Now().Add(-200 * time.Second)) // frozen: no tick since
	if pe.received(handshakeMsg(wireGuardInitiation, 2), src, false) {
		t.Fatal("an initiation read from the backlog after a freeze was taken")
	}
	pe.sending([][]byte{handshakeMsg(wireGuardInitiation, 3)}, nil, time.Now()) // held from before
	b.Alive(time.Now())
	b.Resumed(time.Now())
	if pe.received(handshakeMsg(wireGuardInitiation, 4), src, false) {
		t.Fatal("an initiation right after the resume was taken")
	}
	if got := pe.takeHandshakes(time.Now()); len(got) != 0 {
		t.Errorf("%d handshake messages from before the freeze kept", len(got))
	}
	b.resumedAt.Store(time.Now().Add(-resumeWindow - time.Millisecond).UnixNano())
	if !pe.received(handshakeMsg(wireGuardInitiation, 5), src, false) {
		t.Fatal("an initiation after the resume window refused")
	}
	if b.StaleDropped.Load() != 2 {
		t.Errorf("%d stale initiations counted, want 2", b.StaleDropped.Load())
	}
}

// TestAnsweredInitiationNotCopied: once the answer came, the initiation's
// copy stays home — a peer that restarted in between would take it for a
// new handshake and spoil its own.
func TestAnsweredInitiationNotCopied(t *testing.T) {
	b := New(key.Key{1}, link.Discard)
	defer b.Close()
	std := &fakeStd{}
	b.std = std
	pe := b.PeerEndpoint(key.Key{2})
	src := netip.MustParseAddrPort("203.0.113.22:4000")
	pe.SetRoute(link.Route{Dst: src, Via: b.Shared()})
	b.Send([][]byte{handshakeMsg(wireGuardInitiation, 1)}, pe) // sender index 1
	resp := handshakeMsg(wireGuardResponse, 9)
	resp[8] = 1
	if !pe.received(resp, src, false) {
		t.Fatal("the answer was refused")
	}
	time.Sleep(2 * handshakeCopyDelay) // past when the copy would have gone
	b.mu.Lock()
	n := len(std.sent)
	b.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d packets sent, want the initiation alone: its copy went out after the answer", n)
	}
}

// TestReplyThroughTURN: an initiation that came from the peer's TURN
// relayed address (the peer's allocation sends to our NAT) is answered on
// our route, through our own allocation: answered from the shared socket
// to that relayed address instead, the response would reach the peer
// from our NAT's address, which its Bind takes no WireGuard from
// (fromTURN).
func TestReplyThroughTURN(t *testing.T) {
	b := New(key.Key{1}, link.Discard)
	peer := key.Key{2}
	pe := b.PeerEndpoint(peer)
	relayed, seen := netip.MustParseAddrPort("203.0.113.20:50000"), netip.MustParseAddrPort("203.0.113.21:6000")
	b.SetTURNPeers(map[netip.AddrPort]key.Key{relayed: peer})
	way := &newWay{kind: link.TURN}
	pe.SetRoute(link.Route{Dst: seen, Via: way})
	now := time.Now()
	if !admits(pe, handshakeMsg(wireGuardInitiation, 1), b.via(pe, relayed, false), now) {
		t.Fatal("initiation not admitted")
	}
	resp := handshakeMsg(wireGuardResponse, 2)
	err := b.Send([][]byte{resp}, pe)
	if len(way.sent) != 1 || way.dst != seen {
		t.Fatalf("response sent %d times through TURN, to %v (elsewhere: %v); want once, to %v", len(way.sent), way.dst, err, seen)
	}
	b.Close()
}

// TestOthersTURNClaimIgnored: a member that names another peer's address
// as its own TURN relayed address changes nothing for that peer: its
// initiation from there is still answered the way it came.
func TestOthersTURNClaimIgnored(t *testing.T) {
	b := New(key.Key{1}, link.Discard)
	defer b.Close()
	victim, liar := key.Key{2}, key.Key{3}
	pe := b.PeerEndpoint(victim)
	b.PeerEndpoint(liar)
	direct := netip.MustParseAddrPort("203.0.113.22:4000")
	b.SetTURNPeers(map[netip.AddrPort]key.Key{direct: liar})
	relayed := &route{Route: link.Route{Dst: netip.MustParseAddrPort("203.0.113.10:3478"), Via: b.Relay()}}
	pe.route.Store(relayed)
	now := time.Now()
	admits(pe, handshakeMsg(wireGuardInitiation, 1), b.via(pe, direct, false), now)
	if r := pe.replyPath(handshakeMsg(wireGuardResponse, 2), relayed, now); r == nil || r.Dst != direct {
		t.Fatalf("reply path %+v, want the way the initiation came, %v", r, direct)
	}
}

// A handshake message is no use of the tunnel (Activity.Use), a data
// packet is; both are data for the rest (Activity.Data).
func TestHandshakeIsNoUse(t *testing.T) {
	src := netip.MustParseAddrPort("203.0.113.22:4000")
	_, pe := tickingBind()
	if !pe.received(handshakeMsg(wireGuardInitiation, 1), src, false) {
		t.Fatal("an initiation refused")
	}
	if a := pe.Activity(); a.Use.UnixNano() != 0 || a.Data.UnixNano() == 0 {
		t.Fatalf("after an initiation: use %v, data %v", a.Use, a.Data)
	}
	data := make([]byte, 64)
	data[0] = wireGuardTransport
	pe.received(data, src, false)
	if a := pe.Activity(); a.Use.UnixNano() == 0 {
		t.Error("data received is no use")
	}
}
