package rendezvous

// Tests of the guarantees SECURITY.md lists.

import (
	"crypto/rand"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// startServerWith starts a server with cfg (its key and logger filled in)
// on 127.0.0.1.
func startServerWith(t *testing.T, cfg Config) (*Server, netip.AddrPort, key.Key) {
	t.Helper()
	cfg.PrivateKey, _ = key.NewPrivate()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s := NewServer(cfg)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(c, netip.AddrPort{})
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c.LocalAddr().(*net.UDPAddr).AddrPort(), cfg.PrivateKey.Public()
}

// newClientAt is newClient on another loopback address: rate limits are
// per source address.
func newClientAt(t *testing.T, ip string, server netip.AddrPort, serverKey key.Key) *client {
	t.Helper()
	priv, _ := key.NewPrivate()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, priv: priv, conn: c, server: server, shared: wire.NewSharedKey(priv, serverKey)}
}

// endpointOf is where the server has k registered, invalid if nowhere.
func (s *Server) endpointOf(k key.Key) netip.AddrPort {
	s.reg.mu.RLock()
	defer s.reg.mu.RUnlock()
	if rec := s.reg.peers[k]; rec != nil {
		return rec.endpoint
	}
	return netip.AddrPort{}
}

// waitCount polls a counter until it reaches want.
func waitCount(t *testing.T, what string, load func() uint64, want uint64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, load(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// forge seals m as if from victim, but with eve's key: it names victim and
// fails authentication.
func forge(eve *client, victim key.Key, m wire.Body) []byte {
	return wire.Seal(nil, m.Type(), victim, &eve.shared, m.Append(nil))
}

// TestForgedMessagesChangeNothing: messages that name a key they are not
// sealed with are dropped, answered with nothing, and change no state.
func TestForgedMessagesChangeNothing(t *testing.T) {
	s, srv, sk := startServer(t)
	a, b, eve := newClient(t, srv, sk), newClient(t, srv, sk), newClient(t, srv, sk)
	a.register(b.pub())
	b.register(a.pub())
	a.expectIntro(b.pub(), b.addr())
	b.expectIntro(a.pub(), a.addr())
	// The counter moves after the introductions are sent: wait for it
	// (sampled at once, it read 0 once in CI and 1 at the end).
	waitCount(t, "introductions", s.Stats.Introductions.Load, 1)
	intros := s.Stats.Introductions.Load()

	unknown, _ := key.NewPrivate()
	for _, pkt := range [][]byte{
		// a's registration moved to eve's address, listing eve.
		forge(eve, a.pub(), &wire.Register{Time: eve.now(), Wants: []key.Key{eve.pub()}}),
		// b's registration, claiming to be new.
		forge(eve, b.pub(), &wire.Register{Time: eve.now(), Candidates: []netip.AddrPort{netip.MustParseAddrPort("10.9.9.9:1")}}),
		// a query in a's name, which would introduce a and b again.
		forge(eve, a.pub(), &wire.Query{Time: eve.now(), Peer: b.pub()}),
		forge(eve, a.pub(), &wire.Deregister{Time: eve.now()}),
		// a registration for a key nobody registered.
		forge(eve, unknown.Public(), &wire.Register{Time: eve.now()}),
	} {
		eve.sendRaw(pkt)
	}
	waitCount(t, "auth drops", s.Stats.DropAuth.Load, 5)
	eve.expectSilence()
	a.expectSilence()
	b.expectSilence()
	if s.Registered() != 2 || s.endpointOf(a.pub()) != a.addr() || s.endpointOf(b.pub()) != b.addr() {
		t.Errorf("state changed: %d registered, a at %v, b at %v", s.Registered(), s.endpointOf(a.pub()), s.endpointOf(b.pub()))
	}
	if s.Stats.Introductions.Load() != intros || s.Stats.Registrations.Load() != 2 {
		t.Errorf("introductions %d (was %d), registrations %d", s.Stats.Introductions.Load(), intros, s.Stats.Registrations.Load())
	}
	// a still refreshes: nothing eve sent spent its replay clock.
	a.register(b.pub())
}

// TestReplaysChangeNothing replays captured messages: from another address,
// after the sender deregistered, and too old or too new for the window.
func TestReplaysChangeNothing(t *testing.T) {
	s, srv, sk := startServer(t)
	a, b, eve := newClient(t, srv, sk), newClient(t, srv, sk), newClient(t, srv, sk)
	b.register(a.pub())
	captured := a.seal(&wire.Register{Time: a.now(), Wants: []key.Key{b.pub()}, Candidates: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.2:51820")}})
	a.sendRaw(captured)
	if _, ok := a.recv(2 * time.Second).(*wire.RegisterAck); !ok {
		t.Fatal("no ack")
	}
	a.expectIntro(b.pub(), b.addr())
	b.expectIntro(a.pub(), a.addr())
	query := a.seal(&wire.Query{Time: a.now(), Peer: b.pub()})
	a.sendRaw(query)
	a.expectIntro(b.pub(), b.addr())
	b.expectIntro(a.pub(), a.addr())
	intros := s.Stats.Introductions.Load()

	// Replayed from eve's address: a's registration would move a there.
	eve.sendRaw(captured)
	eve.sendRaw(query)
	a.sendRaw(query) // and from a's own
	waitCount(t, "replay drops", s.Stats.DropReplay.Load, 3)
	eve.expectSilence()
	b.expectSilence()
	if s.endpointOf(a.pub()) != a.addr() || s.Stats.Introductions.Load() != intros {
		t.Errorf("a at %v, %d introductions (was %d)", s.endpointOf(a.pub()), s.Stats.Introductions.Load(), intros)
	}

	// After a deregistered, its old registration does not bring it back.
	a.send(&wire.Deregister{Time: a.now()})
	waitFor(t, "deregistration", func() bool { return s.Registered() == 1 })
	eve.sendRaw(captured)
	waitCount(t, "replay drops", s.Stats.DropReplay.Load, 4)
	if s.Registered() != 1 {
		t.Error("replayed registration re-registered a")
	}

	// Outside the window either way, even for a key never seen.
	c := newClient(t, srv, sk)
	now := time.Now()
	c.send(&wire.Register{Time: uint64(now.Add(-ReplayWindow - time.Minute).UnixNano())})
	c.send(&wire.Register{Time: uint64(now.Add(ReplayWindow + time.Minute).UnixNano())})
	waitCount(t, "replay drops", s.Stats.DropReplay.Load, 6)
	c.expectSilence()
	if s.Registered() != 1 {
		t.Error("a registration outside the replay window was taken")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 2s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestQueryAnswersAlike: whatever the target — a key nobody registered, a
// registered peer that does not list the asker, a registered peer that
// lists the asker but the asker does not list — and whether the asker is
// registered or not, a query gets the same answer: none.
func TestQueryAnswersAlike(t *testing.T) {
	s, srv, sk := startServer(t)
	a, b, eve, ghost := newClient(t, srv, sk), newClient(t, srv, sk), newClient(t, srv, sk), newClient(t, srv, sk)
	fan := newClient(t, srv, sk)
	a.register(b.pub())     // registered, does not list eve
	fan.register(eve.pub()) // registered, lists eve
	eve.register(a.pub())   // eve lists a, not fan
	unregistered := ghost   // never registers
	stranger := newClient(t, srv, sk)
	drops := func() uint64 { return s.Stats.DropNotMutual.Load() + s.Stats.DropUnregistered.Load() }
	for i, q := range []struct {
		from   *client
		target key.Key
	}{
		{eve, unregistered.pub()},
		{eve, a.pub()},
		{eve, fan.pub()},
		{stranger, a.pub()},
		{stranger, unregistered.pub()},
	} {
		q.from.send(&wire.Query{Time: q.from.now(), Peer: q.target})
		waitCount(t, "dropped queries", drops, uint64(i+1))
		q.from.expectSilence()
	}
	a.expectSilence()
	fan.expectSilence()
	// A registration listing them is acknowledged alike, and introduces
	// nobody.
	for _, target := range []key.Key{unregistered.pub(), a.pub(), fan.pub()} {
		eve.send(&wire.Register{Time: eve.now(), Wants: []key.Key{target}})
		ack, ok := eve.recv(2 * time.Second).(*wire.RegisterAck)
		if !ok || ack.Observed != eve.addr() {
			t.Fatalf("ack %+v", ack)
		}
		eve.expectSilence()
	}
	a.expectSilence()
	fan.expectSilence()
	if s.Stats.Introductions.Load() != 0 {
		t.Errorf("%d introductions", s.Stats.Introductions.Load())
	}
}

// TestUnauthenticatedGetsOnlySTUN sends every kind of unauthenticated
// packet; the only answer is the STUN binding response.
func TestUnauthenticatedGetsOnlySTUN(t *testing.T) {
	s, srv, sk := startServer(t)
	a, b := newClient(t, srv, sk), newClient(t, srv, sk)
	a.register(b.pub())
	b.register(a.pub())
	eve := newClient(t, srv, sk)
	random := make([]byte, 200)
	rand.Read(random)
	valid := eve.seal(&wire.Register{Time: eve.now()})
	_, stunReq := nat.NewBindingRequest()
	badSTUN := append([]byte(nil), stunReq...)
	badSTUN[3] += 8 // length beyond the message
	stunSuccess := append([]byte(nil), stunReq...)
	stunSuccess[1] = 0x01 // a binding success response, not a request
	stunSuccess[0] = 0x01
	// u = 1 is a point of low order: its shared key with any private key
	// is the one that all zeros give, which anyone can compute.
	lowOrder := key.Key{1}
	zeroShared := wire.NewSharedKey(eve.priv, lowOrder)
	reg := &wire.Register{Time: eve.now()}
	lowOrderReg := wire.Seal(nil, reg.Type(), lowOrder, &zeroShared, reg.Append(nil))
	for _, pkt := range [][]byte{
		random,
		[]byte(wire.Magic),
		valid[:wire.Overhead-1], // truncated envelope
		valid[:len(valid)-1],    // truncated box
		append(append([]byte(nil), valid...), make([]byte, MaxControlLen)...), // oversized
		forge(eve, a.pub(), &wire.Register{Time: eve.now()}),
		lowOrderReg,
		wire.AppendRelay(nil, b.pub(), []byte{4, 0, 0, 0, 1}), // relay from an unregistered source
		append([]byte(wire.RelayMagic), 1, 2, 3),              // short relay frame
		badSTUN,
		stunSuccess,
		stunReq,
	} {
		eve.sendRaw(pkt)
	}
	buf := make([]byte, 65536)
	answers := 0
	for {
		eve.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := eve.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		answers++
		if _, err := nat.ParseBindingResponse(buf[:n]); err != nil {
			t.Errorf("answer %x is not a STUN binding response: %v", buf[:n], err)
		}
	}
	if answers != 1 {
		t.Errorf("%d answers, want the one STUN response", answers)
	}
	// Auth: the truncated box, the forgery and the low-order key.
	if s.Stats.DropOversize.Load() != 1 || s.Stats.DropAuth.Load() != 3 || s.Stats.DropUnregistered.Load() != 1 {
		t.Errorf("oversize %d, auth %d, unregistered %d: want 1, 3, 1",
			s.Stats.DropOversize.Load(), s.Stats.DropAuth.Load(), s.Stats.DropUnregistered.Load())
	}
	if s.Registered() != 2 {
		t.Errorf("%d registered, want a and b alone", s.Registered())
	}
	if m := s.Stats.DropMalformed.Load(); m < 6 {
		t.Errorf("malformed %d, want at least 6", m)
	}
}

// TestSTUNRateLimitedPerSource: one source gets at most its burst plus its
// rate of answers; another source is answered meanwhile.
func TestSTUNRateLimitedPerSource(t *testing.T) {
	s, srv, sk := startServerWith(t, Config{SourceRate: 10}) // burst 20
	flood, other := newClientAt(t, "127.0.0.3", srv, sk), newClientAt(t, "127.0.0.4", srv, sk)
	start := time.Now()
	const sent = 200 // well within a socket buffer: the kernel drops none
	for i := 0; i < sent; i++ {
		_, req := nat.NewBindingRequest()
		flood.sendRaw(req)
	}
	waitCount(t, "STUN handled", func() uint64 { return s.Stats.STUN.Load() + s.Stats.DropRateLimited.Load() }, sent)
	elapsed := time.Since(start)
	answered := s.Stats.STUN.Load()
	if limit := 20 + uint64(10*elapsed.Seconds()) + 1; answered > limit {
		t.Errorf("%d of %d answered in %v, limit %d", answered, sent, elapsed, limit)
	}
	if answered < 20 {
		t.Errorf("%d answered, want the burst of 20", answered)
	}
	got := 0
	buf := make([]byte, 1500)
	for {
		flood.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, _, err := flood.conn.ReadFromUDPAddrPort(buf); err != nil {
			break
		}
		got++
	}
	if uint64(got) != answered {
		t.Errorf("flooder received %d answers, server counted %d", got, answered)
	}
	_, req := nat.NewBindingRequest()
	other.sendRaw(req)
	other.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, _, err := other.conn.ReadFromUDPAddrPort(buf); err != nil {
		t.Fatalf("another source is not answered: %v", err)
	}
}

// TestFloodKeepsServingRealPeers floods from one address with what an
// attacker can make — garbage, forged registrations for a real peer's key,
// replays of its registration, made-up keys, STUN — while two real peers
// on another address register and are introduced: not one of their
// registrations is lost, and the work spent on the flood is bounded.
func TestFloodKeepsServingRealPeers(t *testing.T) {
	// The real peers register in a tight loop here, far above a key's rate.
	s, srv, sk := startServerWith(t, Config{SourceRate: 100, NewKeyRate: 200, KeyRate: -1})
	a, b := newClientAt(t, "127.0.0.4", srv, sk), newClientAt(t, "127.0.0.4", srv, sk)
	eve := newClientAt(t, "127.0.0.3", srv, sk)
	captured := a.seal(&wire.Register{Time: a.now(), Wants: []key.Key{b.pub()}, Candidates: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.2:51820")}})
	a.sendRaw(captured)
	if _, ok := a.recv(2 * time.Second).(*wire.RegisterAck); !ok {
		t.Fatal("no ack")
	}
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent uint64
	wg.Add(1)
	go func() {
		defer wg.Done()
		junk := make([]byte, 300)
		// 20 packets a millisecond, 20000 a second: a flood the server can
		// read, so that what is measured is its choices, not the kernel
		// dropping everything from a full socket buffer (which an unpaced
		// loop on one core does, real peers' packets included).
		pace := time.NewTicker(time.Millisecond)
		defer pace.Stop()
		for i := 0; ; i++ {
			if i%20 == 0 {
				select {
				case <-stop:
					return
				case <-pace.C:
				}
			}
			var pkt []byte
			switch i % 5 {
			case 0:
				rand.Read(junk)
				pkt = junk
			case 1:
				pkt = forge(eve, a.pub(), &wire.Register{Time: eve.now(), Wants: []key.Key{eve.pub()}})
			case 2:
				pkt = captured
			case 3:
				k, _ := key.NewPrivate()
				pkt = wire.Seal(nil, wire.TypeRegister, k.Public(), &eve.shared, (&wire.Register{Time: eve.now()}).Append(nil))
			case 4:
				_, pkt = nat.NewBindingRequest()
			}
			eve.conn.WriteToUDPAddrPort(pkt, srv)
			sent++
		}
	}()
	// Paced within their source's rate: a round every 50 ms is 40
	// registrations a second from their one address.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	rounds := 0
	for i := 0; time.Since(start) < time.Second; i++ {
		<-tick.C
		rounds++
		a.register(b.pub())
		b.register(a.pub())
		if i == 0 {
			// b's arrival introduces them; later refreshes change nothing.
			a.expectIntro(b.pub(), b.addr())
			b.expectIntro(a.pub(), a.addr())
		}
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d registration rounds, all acknowledged; flood: %d packets in %v; dropped: malformed %d, auth %d, replay %d, rate-limited %d; STUN answered %d",
		rounds, sent, elapsed.Round(time.Millisecond), s.Stats.DropMalformed.Load(), s.Stats.DropAuth.Load(),
		s.Stats.DropReplay.Load(), s.Stats.DropRateLimited.Load(), s.Stats.STUN.Load())
	if s.endpointOf(a.pub()) != a.addr() {
		t.Errorf("a moved to %v", s.endpointOf(a.pub()))
	}
	if s.Stats.DropRateLimited.Load() == 0 {
		t.Error("nothing rate-limited")
	}
	// What the flood got opened or answered is bounded by its source's rate.
	if worked, limit := s.Stats.DropAuth.Load()+s.Stats.DropReplay.Load()+s.Stats.STUN.Load(), 200+uint64(100*elapsed.Seconds())+1; worked > limit {
		t.Errorf("%d flood packets opened or answered in %v, limit %d", worked, elapsed, limit)
	}
	if n := s.limits.keys.len(); n > sharedKeyCacheSize {
		t.Errorf("key cache %d, bound %d", n, sharedKeyCacheSize)
	}
}

// TestKeyRateLimitSparesReplays: a key's budget limits what it sends
// itself; replays of its messages, dropped as such, do not spend it.
func TestKeyRateLimitSparesReplays(t *testing.T) {
	s, srv, sk := startServerWith(t, Config{KeyRate: 2, SourceRate: -1}) // burst 4
	a := newClient(t, srv, sk)
	captured := a.seal(&wire.Register{Time: a.now()})
	a.sendRaw(captured)
	if _, ok := a.recv(2 * time.Second).(*wire.RegisterAck); !ok {
		t.Fatal("no ack")
	}
	for i := 0; i < 100; i++ {
		a.sendRaw(captured)
	}
	waitCount(t, "replays", s.Stats.DropReplay.Load, 100)
	a.register() // still within the burst
	for i := 0; i < 20; i++ {
		a.send(&wire.Register{Time: a.now()})
	}
	waitCount(t, "rate-limited", func() uint64 { return s.Stats.Registrations.Load() + s.Stats.DropRateLimited.Load() }, 22)
	if r := s.Stats.Registrations.Load(); r > 5 {
		t.Errorf("%d registrations acted on; the burst is 4", r)
	}
}

// TestMaxPeers: beyond MaxPeers a new registration is dropped and counted;
// registered peers keep refreshing.
func TestMaxPeers(t *testing.T) {
	s, srv, sk := startServerWith(t, Config{MaxPeers: 2})
	a, b, c := newClient(t, srv, sk), newClient(t, srv, sk), newClient(t, srv, sk)
	a.register()
	b.register()
	c.send(&wire.Register{Time: c.now()})
	c.expectSilence()
	if s.Registered() != 2 || s.Stats.DropTooMany.Load() != 1 {
		t.Errorf("registered %d, too many %d; want 2, 1", s.Registered(), s.Stats.DropTooMany.Load())
	}
	a.register()
	b.register()
	// When one leaves, there is room again.
	a.send(&wire.Deregister{Time: a.now()})
	waitFor(t, "deregistration", func() bool { return s.Registered() == 1 })
	c.register()
}

// TestAnswersToAnAddressBounded: registrations need no round trip, so
// keys registered from a spoofed address could aim acknowledgements and
// introductions at it, many for one. What the server sends an address
// spends that address's budget like what it receives from there.
func TestAnswersToAnAddressBounded(t *testing.T) {
	s, _, sk := startServerWith(t, Config{SourceRate: 100, KeyRate: -1}) // burst 200
	victim := netip.MustParseAddrPort("198.51.100.9:4000")
	l := &recordEgress{}
	start := time.Now()
	x, _ := key.NewPrivate()
	var keys []key.Key
	register := func(priv key.Private, wants []key.Key, cand netip.AddrPort) {
		shared := wire.NewSharedKey(priv, sk)
		m := &wire.Register{Time: uint64(time.Now().UnixNano()), Candidates: []netip.AddrPort{cand}, Wants: wants}
		s.handle(l, netip.AddrPort{}, wire.Seal(nil, m.Type(), priv.Public(), &shared, m.Append(nil)), victim)
	}
	for i := 0; i < 60; i++ {
		k, _ := key.NewPrivate()
		keys = append(keys, k.Public())
		register(k, []key.Key{x.Public()}, netip.MustParseAddrPort("10.0.0.1:1"))
	}
	// Each of x's registrations, with new candidates, would introduce it
	// to all 60: 120 introductions to the victim for one packet.
	for i := 0; i < 5; i++ {
		register(x, keys, netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), uint16(i+1)))
	}
	elapsed := time.Since(start)
	l.mu.Lock()
	sent := len(l.sent)
	l.mu.Unlock()
	if limit := 200 + int(100*elapsed.Seconds()) + 1; sent > limit {
		t.Errorf("%d packets to one address from 65 registrations, limit %d", sent, limit)
	}
	if s.Stats.DropRateLimited.Load() == 0 {
		t.Error("nothing rate-limited")
	}
	t.Logf("65 registrations from one address: %d packets sent to it, %d withheld", sent, s.Stats.DropRateLimited.Load())
}
