package bind

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/transport"
)

// newWay is a transport the Bind has never heard of, as a sixth one would
// be: it records what it is asked to send, and hands Receive what a test
// gives it.
type newWay struct {
	kind     link.PathKind
	sent     [][]byte
	peer     key.Key
	dst      netip.AddrPort
	incoming []arrival
}

// arrival is a packet a transport receives, and its source.
type arrival struct {
	pkt []byte
	src netip.AddrPort
}

func (w *newWay) Send(bufs [][]byte, peer key.Key, dst netip.AddrPort) error {
	for _, p := range bufs {
		w.sent = append(w.sent, bytes.Clone(p))
	}
	w.peer, w.dst = peer, dst
	return nil
}
func (w *newWay) Kind() link.PathKind { return w.kind }
func (w *newWay) Close() error        { return nil }
func (w *newWay) Receive(deliver func(pkt []byte, src netip.AddrPort) bool) error {
	for _, in := range w.incoming {
		deliver(in.pkt, in.src)
	}
	return net.ErrClosed
}

// controlEvents passes on the transport of each control packet the Bind
// hands up.
type controlEvents struct {
	link.Events
	got chan link.Transport
}

func newControlEvents() *controlEvents {
	return &controlEvents{Events: link.Discard, got: make(chan link.Transport, 16)}
}

func (e *controlEvents) Control(_ []byte, _ netip.AddrPort, via link.Transport) { e.got <- via }

// TestAnyTransport: the Bind sends a peer's packets through whatever
// transport its route names, counting what a relayed kind carries, and
// reads any link.Receiver: WireGuard to WireGuard, the rest to the control
// plane with the transport it came by. No case of the Bind's names it.
func TestAnyTransport(t *testing.T) {
	events := newControlEvents()
	b := New(key.Key{1}, events)
	peer := key.Key{2}
	pe := b.PeerEndpoint(peer)
	dst := netip.MustParseAddrPort("198.51.100.7:4500")
	way := &newWay{kind: link.RelayTCP}
	pe.SetRoute(link.Route{Dst: dst, Via: way})
	data := append([]byte{4, 0, 0, 0}, make([]byte, 60)...)
	if err := b.Send([][]byte{data, data}, pe); err != nil {
		t.Fatal(err)
	}
	if len(way.sent) != 2 || way.peer != peer || way.dst != dst {
		t.Fatalf("sent %d packets for %v to %v, want 2 for %v to %v", len(way.sent), way.peer, way.dst, peer, dst)
	}
	if got := b.RelayedBytes()["rendezvous-tcp"][tx]; got != 2*uint64(len(data)) {
		t.Fatalf("relayed %d bytes, want %d", got, 2*len(data))
	}

	// Read as a socket of the peer's: WireGuard goes to WireGuard, a
	// control packet up with the transport, junk is counted.
	var k key.Key
	shared := wire.NewSharedKey(key.Private{}, k)
	control := wire.Seal(nil, wire.TypePing, peer, &shared, (&wire.Ping{}).Append(nil))
	sock := &newWay{kind: link.Socket, incoming: []arrival{{data, dst}, {control, dst}, {[]byte("junk"), dst}}}
	dropped := b.Dropped.Load()
	b.Serve(sock, peer)
	if len(b.side) != 1 {
		t.Errorf("%d packets passed to WireGuard, want 1", len(b.side))
	}
	if len(events.got) != 1 || <-events.got != sock {
		t.Errorf("control packets came up by other ways than the socket")
	}
	if d := b.Dropped.Load() - dropped; d != 1 {
		t.Errorf("%d dropped, want 1", d)
	}
}

// TestServeSocket: a birthday socket, served by the Bind, on loopback:
// the peer's WireGuard reaches WireGuard, its probe the control plane by
// that socket, a route through it sends from it, and Serve ends when its
// owner closes it.
func TestServeSocket(t *testing.T) {
	events := newControlEvents()
	b := New(key.Key{1}, events)
	peer := key.Key{2}
	pe := b.PeerEndpoint(peer)
	ours, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer theirs.Close()
	sock := transport.NewSocket(ours, 2048)
	served := make(chan struct{})
	go func() { b.Serve(sock, peer); close(served) }()

	ourAddr := ours.LocalAddr().(*net.UDPAddr).AddrPort()
	data := append([]byte{4, 0, 0, 0}, make([]byte, 60)...)
	var k key.Key
	shared := wire.NewSharedKey(key.Private{}, k)
	control := wire.Seal(nil, wire.TypePing, peer, &shared, (&wire.Ping{}).Append(nil))
	theirs.WriteToUDPAddrPort(data, ourAddr)
	select {
	case p := <-b.side:
		if p.ep != pe || !bytes.Equal(*p.buf, data) {
			t.Fatalf("WireGuard for %v, %d bytes; want the peer's, %d", p.ep, len(*p.buf), len(data))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's WireGuard did not reach WireGuard")
	}
	theirs.WriteToUDPAddrPort(control, ourAddr)
	select {
	case via := <-events.got:
		if via != link.Transport(sock) {
			t.Fatalf("the probe came up by %v, want the socket", via)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's probe did not reach the control plane")
	}

	pe.SetRoute(link.Route{Dst: theirs.LocalAddr().(*net.UDPAddr).AddrPort(), Via: sock})
	if err := b.Send([][]byte{data, data}, pe); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	theirs.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 2 {
		n, from, err := theirs.ReadFromUDPAddrPort(buf)
		if err != nil || from != ourAddr || n != len(data) {
			t.Fatalf("got %d bytes from %v (%v), want %d from the socket %v", n, from, err, len(data), ourAddr)
		}
	}
	sock.Close()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still reading a closed socket")
	}
}
