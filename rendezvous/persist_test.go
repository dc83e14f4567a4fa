package rendezvous

import (
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// TestRestartKeepsRegistrations saves a server's registrations, starts a
// new server on the same address from the file, and checks that it relays
// and introduces the peers without their registering again, and that a
// registration captured before the restart cannot be replayed after it.
func TestRestartKeepsRegistrations(t *testing.T) {
	priv, _ := key.NewPrivate()
	newServer := func() *Server {
		return NewServer(Config{PrivateKey: priv, Relay: true, Logger: slog.New(slog.DiscardHandler)})
	}
	first := newServer()
	c1, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go first.Serve(c1, netip.AddrPort{})
	srv := c1.LocalAddr().(*net.UDPAddr).AddrPort()
	a, b := newClient(t, srv, priv.Public()), newClient(t, srv, priv.Public())
	captured := a.seal(&wire.Register{Time: a.now(), Wants: []key.Key{b.pub()}, Candidates: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.2:51820")}})
	a.sendRaw(captured)
	if _, ok := a.recv(2 * time.Second).(*wire.RegisterAck); !ok {
		t.Fatal("no ack")
	}
	b.register(a.pub())
	a.expectIntro(b.pub(), b.addr())
	b.expectIntro(a.pub(), a.addr())
	if !first.Dirty() {
		t.Error("new registrations did not make the server dirty")
	}
	state := filepath.Join(t.TempDir(), "rendezvous.state")
	if err := first.Save(state); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	first.Close()

	second := newServer()
	defer second.Close()
	c2, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if n, err := second.Load(state, []*net.UDPConn{c2}); err != nil || n != 2 {
		t.Fatalf("restored %d registrations (%v), want 2", n, err)
	}
	go second.Serve(c2, netip.AddrPort{})

	pkt := []byte{4, 0, 0, 0, 7}
	a.sendRaw(wire.AppendRelay(nil, b.pub(), pkt))
	if from, got, ok := b.recvRelay(2 * time.Second); !ok || from != a.pub() || string(got) != string(pkt) {
		t.Fatalf("after the restart b got %x from %v (%v)", got, from, ok)
	}
	a.send(&wire.Query{Time: a.now(), Peer: b.pub()})
	a.expectIntro(b.pub(), b.addr())

	a.sendRaw(captured)
	deadline := time.Now().Add(2 * time.Second)
	for second.Stats.DropReplay.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a registration from before the restart was not dropped as a replay")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
