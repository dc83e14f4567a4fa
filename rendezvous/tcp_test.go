package rendezvous

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/tunnel/key"
)

// TestTCPPeerIsRelayed registers one peer over TCP and one over UDP, and
// relays WireGuard packets both ways between them; when the TCP
// connection closes, its peer is forgotten.
func TestTCPPeerIsRelayed(t *testing.T) {
	s, srv, sk := startServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go s.ServeTCP(ln)

	udp := newClient(t, srv, sk)
	tcpPriv, _ := key.NewPrivate()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	st := wire.NewStream(conn)
	defer st.Close()
	shared := wire.NewSharedKey(tcpPriv, sk)
	var clock wire.Clock
	reg := &wire.Register{Time: clock.Next(uint64(time.Now().UnixNano())), Wants: []key.Key{udp.pub()}}
	if err := st.Write(wire.Seal(nil, reg.Type(), tcpPriv.Public(), &shared, reg.Append(nil))); err != nil {
		t.Fatal(err)
	}
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
		if from, got := wire.ParseRelay(frame); from != udp.pub() || string(got) != string(pkt) {
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
