package rendezvous

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// client is a peer's side of the protocol, driven by hand.
type client struct {
	t      *testing.T
	priv   key.Private
	conn   *net.UDPConn
	server netip.AddrPort
	shared wire.SharedKey
	clock  wire.Clock
}

func startServer(t *testing.T) (*Server, netip.AddrPort, key.Key) {
	t.Helper()
	priv, _ := key.NewPrivate()
	s := NewServer(Config{PrivateKey: priv, Relay: true, Logger: slog.New(slog.DiscardHandler)})
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(c, netip.MustParseAddrPort("127.0.0.2:3478"))
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c.LocalAddr().(*net.UDPAddr).AddrPort(), priv.Public()
}

func newClient(t *testing.T, server netip.AddrPort, serverKey key.Key) *client {
	t.Helper()
	priv, _ := key.NewPrivate()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, priv: priv, conn: c, server: server, shared: wire.NewSharedKey(priv, serverKey)}
}

func (c *client) pub() key.Key { return c.priv.Public() }

func (c *client) now() uint64 { return c.clock.Next(uint64(time.Now().UnixNano())) }

func (c *client) seal(m wire.Body) []byte {
	return wire.Seal(nil, m.Type(), c.pub(), &c.shared, m.Append(nil))
}

func (c *client) sendRaw(b []byte) {
	if _, err := c.conn.WriteToUDPAddrPort(b, c.server); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) send(m wire.Body) { c.sendRaw(c.seal(m)) }

// recv returns the next message from the server, or nil after wait.
func (c *client) recv(wait time.Duration) wire.Body {
	c.t.Helper()
	buf := make([]byte, 65536)
	c.conn.SetReadDeadline(time.Now().Add(wait))
	n, _, err := c.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil
	}
	h, err := wire.ParseHeader(buf[:n])
	if err != nil {
		c.t.Fatalf("server sent a non-control packet: %v", err)
	}
	plain, err := wire.Open(buf[:n], &c.shared)
	if err != nil {
		c.t.Fatalf("server message fails authentication: %v", err)
	}
	m, err := wire.Parse(h.Type, plain)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *client) register(wants ...key.Key) {
	c.t.Helper()
	c.send(&wire.Register{Time: c.now(), Candidates: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.2:51820")}, Wants: wants})
	ack, ok := c.recv(2 * time.Second).(*wire.RegisterAck)
	if !ok {
		c.t.Fatal("no register ack")
	}
	if want := c.conn.LocalAddr().(*net.UDPAddr).AddrPort(); ack.Observed != want {
		c.t.Fatalf("ack observed %v, want %v", ack.Observed, want)
	}
}

// expectIntro reads messages until an Intro arrives.
func (c *client) expectIntro(peer key.Key, endpoint netip.AddrPort) {
	c.t.Helper()
	if in := c.nextIntro(peer); in.Peer != peer || in.Observed != endpoint || len(in.Candidates) != 1 {
		c.t.Fatalf("intro %+v, want peer %v at %v", in, peer, endpoint)
	}
}

// nextIntro reads messages until an Intro arrives; none within 2 s of
// the last message fails the test, naming the peer expected.
func (c *client) nextIntro(peer key.Key) *wire.Intro {
	c.t.Helper()
	for {
		m := c.recv(2 * time.Second)
		if m == nil {
			c.t.Fatalf("no intro to %v", peer)
		}
		if in, ok := m.(*wire.Intro); ok {
			return in
		}
	}
}

// expectSilence asserts that nothing arrives for a while. It is the only
// way to show that an answer is not sent; 300 ms on loopback is far beyond
// the microseconds an answer takes.
func (c *client) expectSilence() {
	c.t.Helper()
	if m := c.recv(300 * time.Millisecond); m != nil {
		c.t.Fatalf("unexpected %v", m.Type())
	}
}

func (c *client) addr() netip.AddrPort { return c.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func TestIntroducesMutualPeersAtOnce(t *testing.T) {
	_, srv, sk := startServer(t)
	a, b := newClient(t, srv, sk), newClient(t, srv, sk)
	a.register(b.pub())
	a.expectSilence() // b is not there yet
	b.register(a.pub())
	// b's arrival introduces both sides at the same moment.
	a.expectIntro(b.pub(), b.addr())
	b.expectIntro(a.pub(), a.addr())

	// And an explicit query does it again.
	a.send(&wire.Query{Time: a.now(), Peer: b.pub()})
	a.expectIntro(b.pub(), b.addr())
	b.expectIntro(a.pub(), a.addr())
}

func TestStrangerLearnsNothing(t *testing.T) {
	s, srv, sk := startServer(t)
	a, b, eve := newClient(t, srv, sk), newClient(t, srv, sk), newClient(t, srv, sk)
	a.register(b.pub())
	eve.register(a.pub())
	eve.send(&wire.Query{Time: eve.now(), Peer: a.pub()})
	eve.expectSilence()
	a.expectSilence()
	// Asking for an unregistered key looks exactly the same.
	eve.send(&wire.Query{Time: eve.now(), Peer: b.pub()})
	eve.expectSilence()
	if s.Stats.Introductions.Load() != 0 {
		t.Error("introduced a stranger")
	}
}

func TestReplayAndForgeryChangeNothing(t *testing.T) {
	s, srv, sk := startServer(t)
	a := newClient(t, srv, sk)
	reg := a.seal(&wire.Register{Time: a.now()})
	a.sendRaw(reg)
	if _, ok := a.recv(2 * time.Second).(*wire.RegisterAck); !ok {
		t.Fatal("no ack")
	}
	a.sendRaw(reg) // replayed
	a.expectSilence()
	if s.Stats.DropReplay.Load() != 1 {
		t.Errorf("replays dropped: %d, want 1", s.Stats.DropReplay.Load())
	}

	// A forged deregistration: names a's key, sealed with another key.
	eve := newClient(t, srv, sk)
	forged := wire.Seal(nil, wire.TypeDeregister, a.pub(), &eve.shared, (&wire.Deregister{Time: eve.now()}).Append(nil))
	eve.sendRaw(forged)
	eve.expectSilence()
	if s.Registered() != 1 || s.Stats.DropAuth.Load() != 1 {
		t.Errorf("registered %d, auth drops %d; want 1, 1", s.Registered(), s.Stats.DropAuth.Load())
	}

	// Garbage gets no answer at all.
	eve.sendRaw([]byte("hello, are you a rendezvous?"))
	eve.expectSilence()

	a.send(&wire.Deregister{Time: a.now()})
	deadline := time.Now().Add(2 * time.Second)
	for s.Registered() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.Registered() != 0 {
		t.Error("deregistration ignored")
	}
}

func TestAnswersSTUN(t *testing.T) {
	_, srv, sk := startServer(t)
	c := newClient(t, srv, sk)
	tx, req := nat.NewBindingRequest()
	c.sendRaw(req)
	buf := make([]byte, 1500)
	c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := c.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	res, err := nat.ParseBindingResponse(buf[:n])
	if err != nil || res.TxID != tx || res.Mapped != c.addr() {
		t.Fatalf("STUN answer %+v err %v; want tx %x mapped %v", res, err, tx, c.addr())
	}
	if res.Other != netip.MustParseAddrPort("127.0.0.2:3478") {
		t.Errorf("OTHER-ADDRESS %v", res.Other)
	}
}

func TestRegistrationExpires(t *testing.T) {
	priv, _ := key.NewPrivate()
	s := NewServer(Config{PrivateKey: priv, TTL: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	defer s.Close()
	c, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer c.Close()
	go s.Serve(c, netip.AddrPort{})
	a := newClient(t, c.LocalAddr().(*net.UDPAddr).AddrPort(), priv.Public())
	a.register()
	s.expire(time.Now().Add(59 * time.Second))
	if s.Registered() != 1 {
		t.Fatal("expired early")
	}
	s.expire(time.Now().Add(61 * time.Second))
	if s.Registered() != 0 {
		t.Fatal("did not expire")
	}
}

// recvRelay reads the next relayed packet.
func (c *client) recvRelay(wait time.Duration) (key.Key, []byte, bool) {
	buf := make([]byte, 65536)
	for {
		c.conn.SetReadDeadline(time.Now().Add(wait))
		n, _, err := c.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return key.Key{}, nil, false
		}
		if wire.IsRelay(buf[:n]) {
			k, pkt, _ := wire.ParseRelay(buf[:n])
			return k, append([]byte(nil), pkt...), true
		}
	}
}

func TestRelaysOnlyBetweenMutualPeers(t *testing.T) {
	s, srv, sk := startServer(t)
	a, b, eve := newClient(t, srv, sk), newClient(t, srv, sk), newClient(t, srv, sk)
	a.register(b.pub())
	b.register(a.pub())
	eve.register(a.pub())
	pkt := []byte{4, 0, 0, 0, 9, 9, 9}

	a.sendRaw(wire.AppendRelay(nil, b.pub(), pkt))
	from, got, ok := b.recvRelay(2 * time.Second)
	if !ok || from != a.pub() || string(got) != string(pkt) {
		t.Fatalf("b got %v %x %v; want a's packet", from, got, ok)
	}

	// Eve lists a, but a does not list eve: no relaying either way.
	eve.sendRaw(wire.AppendRelay(nil, a.pub(), pkt))
	a.sendRaw(wire.AppendRelay(nil, eve.pub(), pkt))
	// An unregistered source cannot relay at all.
	stranger := newClient(t, srv, sk)
	stranger.sendRaw(wire.AppendRelay(nil, b.pub(), pkt))
	if _, _, ok := a.recvRelay(300 * time.Millisecond); ok {
		t.Error("a received a relayed packet from eve")
	}
	if _, _, ok := eve.recvRelay(300 * time.Millisecond); ok {
		t.Error("eve received a relayed packet from a")
	}
	if _, _, ok := b.recvRelay(300 * time.Millisecond); ok {
		t.Error("b received a stranger's packet")
	}
	if s.Stats.RelayPackets.Load() != 1 || s.Stats.DropNotMutual.Load() != 2 || s.Stats.DropUnregistered.Load() != 1 {
		t.Errorf("relayed %d, not mutual %d, unregistered %d; want 1, 2, 1",
			s.Stats.RelayPackets.Load(), s.Stats.DropNotMutual.Load(), s.Stats.DropUnregistered.Load())
	}
}
