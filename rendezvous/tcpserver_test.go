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

// TestTCPPeerIsRelayed registers one peer over TCP and one over UDP, and
// relays WireGuard packets both ways between them; when the TCP
// connection closes, its peer is forgotten.
func TestTCPPeerIsRelayed(t *testing.T) {
	s, srv, sk := startServer(t)
	ln := serveTCP(t, s)
	udp := newClient(t, srv, sk)
	tcpPriv, conn, st, shared := registerTCP(t, ln.Addr().String(), sk, udp.pub())
	defer st.Close()
	buf := make([]byte, wire.MaxStreamDatagram)
	readStream := func() []byte {
		t.Helper()
		st.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := st.Read(buf)
		if err != nil {
			t.Fatalf("read from the TCP stream: %v", err)
		}
		return buf[:n]
	}
	ack := readStream()
	plain, err := wire.Open(ack, &shared)
	if err != nil {
		t.Fatal(err)
	}
	body, err := wire.Parse(wire.TypeRegisterAck, plain)
	if err != nil || body.(*wire.RegisterAck).Observed != netip.MustParseAddrPort(conn.LocalAddr().String()) {
		t.Fatalf("ack over TCP: %+v %v", body, err)
	}
	udp.register(tcpPriv.Public())

	pkt := []byte{4, 0, 0, 0, 1, 2, 3}
	udp.sendRaw(wire.AppendRelay(nil, tcpPriv.Public(), pkt))
	for {
		frame := readStream()
		if !wire.IsRelay(frame) {
			continue // the intro
		}
		if from, got, _ := wire.ParseRelay(frame); from != udp.pub() || string(got) != string(pkt) {
			t.Fatalf("TCP peer got %x from %v", got, from)
		}
		break
	}
	st.WriteRelayed(udp.pub(), [][]byte{pkt})
	if from, got, ok := udp.recvRelay(2 * time.Second); !ok || from != tcpPriv.Public() || string(got) != string(pkt) {
		t.Fatalf("UDP peer got %x from %v (%v)", got, from, ok)
	}

	st.Close()
	deadline := time.Now().Add(2 * time.Second)
	for s.Registered() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d registered after the TCP peer left, want 1", s.Registered())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serveTCP serves s on a TCP listener on loopback until the test ends.
func serveTCP(t *testing.T, s *Server) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go s.ServeTCP(ln)
	return ln
}

// registerTCP connects a new peer to the rendezvous at addr over TCP and
// sends its registration, wanting wants.
func registerTCP(t *testing.T, addr string, serverKey key.Key, wants ...key.Key) (key.Private, net.Conn, *wire.Stream, wire.SharedKey) {
	t.Helper()
	priv, _ := key.NewPrivate()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	st := wire.NewStream(conn)
	t.Cleanup(func() { st.Close() })
	shared := wire.NewSharedKey(priv, serverKey)
	var clock wire.Clock
	reg := &wire.Register{Time: clock.Next(uint64(time.Now().UnixNano())), Wants: wants}
	if err := st.Write(wire.Seal(nil, reg.Type(), priv.Public(), &shared, reg.Append(nil))); err != nil {
		t.Fatal(err)
	}
	return priv, conn, st, shared
}

// TestTCPPeerThatNeverReadsBlocksNobody: a TCP peer that stops reading (a
// laptop asleep on relay-tcp) while its mutual peer floods it through the
// relay must not delay anyone else: STUN answers keep coming within a
// second, the frames for it that do not fit its queue are dropped and
// counted, and once a send to it times out its link closes and it is
// forgotten. Before each TCP link had its own writer, the UDP reader
// blocked in that peer's writes and STUN went unanswered.
func TestTCPPeerThatNeverReadsBlocksNobody(t *testing.T) {
	s, srv, sk := startServer(t)
	ln := serveTCP(t, s)
	flooder := newClient(t, srv, sk)
	sleeper, conn, _, _ := registerTCP(t, ln.Addr().String(), sk, flooder.pub())
	conn.(*net.TCPConn).SetReadBuffer(4096) // and never read
	waitFor(t, "the TCP peer's registration", func() bool { return s.Registered() == 1 })
	flooder.register(sleeper.Public())

	stop := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		frame := wire.AppendRelay(nil, sleeper.Public(), make([]byte, 1400))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			flooder.conn.WriteToUDPAddrPort(frame, srv)
			if i%64 == 63 {
				time.Sleep(time.Millisecond) // about 60k frames/s: no need to overflow our own socket
			}
		}
	}()
	defer func() { close(stop); <-flooded }()

	asker := newClient(t, srv, sk)
	buf := make([]byte, 1500)
	for i := range 12 {
		tx, req := nat.NewBindingRequest()
		sent := time.Now()
		asker.sendRaw(req)
		for {
			asker.conn.SetReadDeadline(sent.Add(time.Second))
			n, _, err := asker.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("STUN request %d unanswered within a second while a TCP peer does not read (%v)", i, err)
			}
			if res, err := nat.ParseBindingResponse(buf[:n]); err == nil && res.TxID == tx {
				break
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	if s.Stats.DropTCPQueueFull.Load() == 0 {
		t.Error("no frame counted as dropped for a full TCP queue")
	}
	// The stalled send times out (5 s) and closes the link.
	deadline := time.Now().Add(10 * time.Second)
	for s.Registered() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the TCP peer that never reads is still registered (%d peers)", s.Registered())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRelayOff: a rendezvous run with --relay=false says so in its acks
// and relays nothing, counting what it dropped.
func TestRelayOff(t *testing.T) {
	priv, _ := key.NewPrivate()
	s := NewServer(Config{PrivateKey: priv, Relay: false, Logger: slog.New(slog.DiscardHandler)})
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(c, netip.AddrPort{})
	t.Cleanup(func() { c.Close(); s.Close() })
	srv := c.LocalAddr().(*net.UDPAddr).AddrPort()
	a, b := newClient(t, srv, priv.Public()), newClient(t, srv, priv.Public())
	a.send(&wire.Register{Time: a.now(), Wants: []key.Key{b.pub()}})
	if ack, ok := a.recv(2 * time.Second).(*wire.RegisterAck); !ok || ack.Flags&wire.AckRelay != 0 {
		t.Fatalf("ack %+v: want one without AckRelay", ack)
	}
	b.register(a.pub())
	a.sendRaw(wire.AppendRelay(nil, b.pub(), []byte{4, 0, 0, 0, 1}))
	if _, _, ok := b.recvRelay(300 * time.Millisecond); ok {
		t.Fatal("relayed with the relay off")
	}
	if n := s.Stats.DropRelayOff.Load(); n != 1 {
		t.Fatalf("DropRelayOff = %d, want 1", n)
	}
}
