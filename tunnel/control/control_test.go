package control

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/registration"
	"github.com/punchtun/punchtun/tunnel/transport"
)

// The control plane on a fake clock and fakes of the data path, WireGuard
// and the host: the harness calls tick and handle with the times it
// chooses, catches everything the control plane sends on the shared
// socket (fakeData), and plays the rendezvous and the peer with their own
// keys. No root, no sockets, no sleeping: the path logic runs in
// milliseconds.

// fakeData is a link.DataPath that records what is sent and the routes
// set, and passes nothing on.
type fakeData struct {
	sent    []sentPacket
	peers   map[key.Key]*fakePeer
	relays  []netip.AddrPort
	dsts    map[netip.Addr]bool // AddDestinations, RemoveDestinations
	resumed int                 // Resumed calls
	alive   time.Time           // the latest Alive
	// aliveAtResume is the latest Alive when Resumed came: the tick
	// before the freeze, if the data path dropped stale initiations
	// without a gap.
	aliveAtResume time.Time
	injected      [][]byte       // Inject: gossip packets to members
	relay         link.Transport // Relay: frames, and sends on Shared
	events        link.Events    // Serve hands all it reads here
}

type sentPacket struct {
	pkt []byte
	dst netip.AddrPort
}

func (f *fakeData) Peer(k key.Key) link.Peer {
	if f.peers[k] == nil {
		f.peers[k] = &fakePeer{}
	}
	return f.peers[k]
}
func (f *fakeData) RemovePeer(k key.Key)   { delete(f.peers, k) }
func (f *fakeData) Port() uint16           { return 51820 }
func (f *fakeData) Shared() link.Transport { return fakeShared{f} }
func (f *fakeData) Relay() link.Transport {
	if f.relay == nil {
		f.relay = transport.NewRelay(f.Shared())
	}
	return f.relay
}

// Serve passes all it reads to the control plane: nothing is WireGuard.
func (f *fakeData) Serve(t link.Transport, _ key.Key) {
	if r, ok := t.(link.Receiver); ok {
		r.Receive(func(pkt []byte, src netip.AddrPort) bool { f.events.Control(pkt, src, t); return false })
	}
}
func (f *fakeData) SetRelays(addrs []netip.AddrPort)        { f.relays = addrs }
func (f *fakeData) SetTURNPeers(map[netip.AddrPort]key.Key) {}
func (f *fakeData) Alive(now time.Time)                     { f.alive = now }
func (f *fakeData) Resumed(time.Time)                       { f.resumed, f.aliveAtResume = f.resumed+1, f.alive }

// fakeShared is fakeData's shared socket: it records what is sent.
type fakeShared struct{ f *fakeData }

func (s fakeShared) Send(bufs [][]byte, _ key.Key, dst netip.AddrPort) error {
	for _, pkt := range bufs {
		s.f.sent = append(s.f.sent, sentPacket{append([]byte(nil), pkt...), dst})
	}
	return nil
}
func (s fakeShared) Kind() link.PathKind { return link.Shared }
func (s fakeShared) Close() error        { return nil }

// fakePeer is a peer's side in fakeData: its route, and the activity the
// test says WireGuard had.
type fakePeer struct {
	route    link.Route
	activity link.Activity
}

func (p *fakePeer) Route() link.Route       { return p.route }
func (p *fakePeer) SetRoute(r link.Route)   { p.route = r }
func (p *fakePeer) Learn(netip.AddrPort)    {}
func (p *fakePeer) Activity() link.Activity { return p.activity }

// fakeWireGuard records what the control plane asks of WireGuard.
type fakeWireGuard struct {
	handshakes   int
	rehandshakes int
	members      map[key.Key][]netip.Prefix // AddMember, RemoveMember
	// What Repoint and RemoveMember fail with (nil: they succeed).
	repointErr, removeErr error
}

func (w *fakeWireGuard) Repoint(key.Key) error       { return w.repointErr }
func (w *fakeWireGuard) HandshakeIfNone(key.Key)     { w.handshakes++ }
func (*fakeWireGuard) SetPeerMTU(key.Key, int) error { return nil }
func (w *fakeWireGuard) Rehandshake(key.Key)         { w.rehandshakes++ }

// fakeHost is a host whose paths are all as big as the links, and whose
// network never changes.
type fakeHost struct{}

func (fakeHost) PathMTU(netip.Addr, uint32) int                       { return 0 }
func (fakeHost) WatchNetwork(done <-chan struct{}, _ chan<- struct{}) { <-done }

var (
	rvAddr   = netip.MustParseAddrPort("203.0.113.10:3478")
	rvOther  = netip.MustParseAddrPort("203.0.113.11:3478")
	ourPub   = netip.MustParseAddrPort("198.51.100.4:40000")
	peerAddr = netip.MustParseAddrPort("203.0.113.22:50000")
	peerLAN  = netip.MustParseAddrPort("192.168.7.2:50000")
)

type harness struct {
	t    *testing.T
	c    *Control
	data *fakeData
	// now is the fake clock the control plane reads (Now): the test
	// goroutine sets it (setNow), the control plane's helpers read it too.
	now        time.Time
	nowMu      sync.Mutex
	rvPriv     key.Private
	peerPriv   key.Private
	rvShared   wire.SharedKey // between us and the rendezvous
	peerShared wire.SharedKey // between us and the peer
	clock      wire.Clock     // the rendezvous's and the peer's message times
	// rendezvousUp: the rendezvous answers registrations and STUN as
	// advance goes; served counts what it has seen of std.sent.
	rendezvousUp bool
	served       int
}

// harnessStart is where the harness's clock starts: any time will do, as
// the control plane reads no other clock.
var harnessStart = time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)

func newHarness(t *testing.T) *harness { return newHarnessAt(t, "") }

// Now is the harness's clock, which the control plane reads.
func (h *harness) Now() time.Time {
	h.nowMu.Lock()
	defer h.nowMu.Unlock()
	return h.now
}

// setNow moves the harness's clock to now.
func (h *harness) setNow(now time.Time) {
	h.nowMu.Lock()
	defer h.nowMu.Unlock()
	h.now = now
}

// newHarnessAt is newHarness keeping its state at statePath ("": none).
func newHarnessAt(t *testing.T, statePath string) *harness {
	t.Helper()
	ours, _ := key.NewPrivate()
	rv, _ := key.NewPrivate()
	peer, _ := key.NewPrivate()
	h := &harness{t: t, data: &fakeData{peers: map[key.Key]*fakePeer{}}, now: harnessStart, rvPriv: rv, peerPriv: peer,
		rvShared: wire.NewSharedKey(rv, ours.Public()), peerShared: wire.NewSharedKey(peer, ours.Public())}
	h.c = newControl(slog.New(slog.DiscardHandler), Config{PrivateKey: ours, Interface: "pt-harness",
		Servers: []ServerConfig{{HostPort: rvAddr.String(), Key: rv.Public()}}, Peers: []PeerConfig{{Name: "bob", Key: peer.Public()}}}, statePath, State{}, h)
	h.c.attach(h.data, &fakeWireGuard{}, fakeHost{})
	h.data.events = h.c.Events()
	h.c.resolved(h.c.servers[0], rvAddr)
	h.c.dial = func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("no TCP in this test") }
	if !slices.Equal(h.data.relays, []netip.AddrPort{rvAddr}) {
		t.Fatalf("relays %v once the rendezvous resolved, want %v", h.data.relays, rvAddr)
	}
	h.c.udpSince = h.now
	return h
}

// setLog sends the log of the control plane and its components to l.
func (h *harness) setLog(l *slog.Logger) {
	h.c.log, h.c.members.log, h.c.docs.log, h.c.peerDeps.log = l, l, l, l
}

func (h *harness) peer() *peer {
	for _, p := range h.c.peers {
		return p
	}
	return nil
}

// advance ticks the control plane every tickInterval for d; a rendezvous
// that is up answers as it goes.
func (h *harness) advance(d time.Duration) {
	for end := h.now.Add(d); h.now.Before(end); {
		h.setNow(h.now.Add(tickInterval))
		h.runPosted()
		h.c.tick(h.now)
		h.serve()
	}
}

// runPosted runs what helpers posted to the control goroutine, as run
// would between events.
func (h *harness) runPosted() {
	for {
		select {
		case f := <-h.c.actions:
			f()
		default:
			return
		}
	}
}

// serve has the rendezvous, if up, answer what was sent to it since it
// last looked: STUN, and registrations with their acks.
func (h *harness) serve() {
	for h.rendezvousUp && h.served < len(h.data.sent) {
		s := h.data.sent[h.served]
		h.served++
		if s.dst != rvAddr && s.dst != rvOther {
			continue
		}
		h.answerSTUN([]sentPacket{s})
		if bodies, _ := h.opened([]sentPacket{s}, &h.rvShared); len(bodies) == 1 {
			if _, ok := bodies[0].(*wire.Register); ok {
				h.fromRendezvous(&wire.RegisterAck{Time: h.clock.Next(uint64(h.now.UnixNano())), Observed: ourPub, Flags: wire.AckRelay})
			}
		}
	}
}

// take returns what was sent since the last take.
func (h *harness) take() []sentPacket {
	out := h.data.sent
	h.data.sent, h.served = nil, 0
	return out
}

// opened returns the control messages among sent that the receiver with
// shared can open, with their destinations.
func (h *harness) opened(sent []sentPacket, shared *wire.SharedKey) (bodies []wire.Body, dsts []netip.AddrPort) {
	for _, s := range sent {
		hdr, err := wire.ParseHeader(s.pkt)
		if err != nil {
			continue
		}
		plain, err := wire.Open(s.pkt, shared)
		if err != nil {
			continue
		}
		if b, err := wire.Parse(hdr.Type, plain); err == nil {
			bodies, dsts = append(bodies, b), append(dsts, s.dst)
		}
	}
	return bodies, dsts
}

// fromRendezvous hands the control plane m, sealed by the rendezvous.
func (h *harness) fromRendezvous(m wire.Body) {
	b := wire.Seal(nil, m.Type(), h.rvPriv.Public(), &h.rvShared, m.Append(nil))
	h.c.handle(inbound{pkt: b, src: rvAddr, at: h.now})
}

// fromPeer hands the control plane m, sealed by the peer, from src.
func (h *harness) fromPeer(m wire.Body, src netip.AddrPort) {
	b := wire.Seal(nil, m.Type(), h.peerPriv.Public(), &h.peerShared, m.Append(nil))
	h.c.handle(inbound{pkt: b, src: src, at: h.now})
}

// answerSTUN answers every STUN request among sent as the rendezvous
// would, mapping us to ourPub at every server address.
func (h *harness) answerSTUN(sent []sentPacket) {
	for _, s := range sent {
		if !nat.IsSTUN(s.pkt) {
			continue
		}
		other := rvOther
		if s.dst == rvOther {
			other = rvAddr
		}
		resp, err := nat.BindingResponse(s.pkt, ourPub, other)
		if err != nil {
			h.t.Fatal(err)
		}
		h.c.handle(inbound{pkt: resp, src: s.dst, at: h.now})
	}
}

// register brings up the rendezvous, and the harness to registered with
// an easy NAT.
func (h *harness) register() {
	h.t.Helper()
	h.rendezvousUp = true
	h.c.tick(h.now)
	h.serve()
	if !h.c.servers[0].reg.Registered() || h.c.mapping != nat.MappingEasy {
		h.t.Fatalf("not registered (%v) or NAT %v after the ack", h.c.servers[0].reg.Registered(), h.c.mapping)
	}
	h.take()
}

// introduce has the rendezvous introduce the peer at observed.
func (h *harness) introduce(observed netip.AddrPort) {
	h.fromRendezvous(&wire.Intro{Time: h.clock.Next(uint64(h.now.UnixNano())), Peer: h.peerPriv.Public(),
		Observed: observed, NAT: byte(nat.MappingEasy), Candidates: []netip.AddrPort{peerLAN}})
}

// goDirect registers, has the peer introduced, and answers our probes:
// the peer is then on a direct path to peerAddr.
func (h *harness) goDirect() {
	h.t.Helper()
	h.register()
	h.introduce(peerAddr)
	if h.answerProbes(h.take(), peerAddr) == 0 || h.peer().ep.Route().Dst != peerAddr {
		h.t.Fatal("no direct path to the peer")
	}
}

// answerProbes answers, from the peer, the probes we sent to addr.
func (h *harness) answerProbes(sent []sentPacket, addr netip.AddrPort) int {
	bodies, dsts := h.opened(sent, &h.peerShared)
	n := 0
	for i, b := range bodies {
		if ping, ok := b.(*wire.Ping); ok && dsts[i] == addr {
			h.fromPeer(&wire.Pong{TxID: ping.TxID, Src: ourPub}, addr)
			n++
		}
	}
	return n
}

func TestControlRegistrationBacksOff(t *testing.T) {
	h := newHarness(t)
	var at []time.Duration
	start := h.now
	h.c.tick(h.now)
	for h.now.Sub(start) < 20*time.Second {
		sent := h.take()
		h.answerSTUN(sent) // UDP works; registrations go unanswered
		bodies, _ := h.opened(sent, &h.rvShared)
		for _, b := range bodies {
			if _, ok := b.(*wire.Register); ok {
				at = append(at, h.now.Sub(start).Round(tickInterval))
			}
		}
		h.advance(tickInterval)
	}
	// Unanswered: 1 s, doubling, up to registration.MaxBackoff.
	want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second, 12 * time.Second, 17 * time.Second}
	if len(at) < len(want) {
		t.Fatalf("registrations at %v, want at %v", at, want)
	}
	for i, w := range want {
		if d := at[i] - w; d < 0 || d > 2*tickInterval {
			t.Fatalf("registrations at %v, want at %v", at, want)
		}
	}
	// The rendezvous comes up: registered within the backoff, and the
	// next registration is the refresh, RefreshInterval later.
	h.rendezvousUp = true
	for up := h.now; !h.c.servers[0].reg.Registered(); h.advance(tickInterval) {
		if h.now.Sub(up) > registration.MaxBackoff+tickInterval {
			t.Fatal("not registered within registration.MaxBackoff of the rendezvous coming up")
		}
	}
	h.take()
	h.advance(wire.RefreshInterval - time.Second)
	if n := h.registrations(h.take()); n != 0 {
		t.Fatalf("%d registrations before the refresh was due", n)
	}
	h.advance(2 * time.Second)
	if n := h.registrations(h.take()); n != 1 {
		t.Fatalf("%d registrations at the refresh, want 1", n)
	}
}

// registrations counts the registrations among sent.
func (h *harness) registrations(sent []sentPacket) int {
	bodies, _ := h.opened(sent, &h.rvShared)
	n := 0
	for _, b := range bodies {
		if _, ok := b.(*wire.Register); ok {
			n++
		}
	}
	return n
}

func TestControlTakesSilenceForBlockedUDP(t *testing.T) {
	h := newHarness(t)
	h.c.tick(h.now)
	h.advance(udpGiveUp - 2*tickInterval)
	if h.c.udpBlocked() {
		t.Fatal("UDP taken for blocked before udpGiveUp")
	}
	h.advance(3 * tickInterval)
	if !h.c.udpBlocked() {
		t.Fatal("no answer for udpGiveUp, and UDP not taken for blocked")
	}
	// UDP is asked again every second while that is recent: a STUN
	// answer, when it comes, means UDP works again.
	h.take()
	h.advance(udpProbeEvery)
	sent := h.take()
	if len(sent) == 0 {
		t.Fatal("no STUN over UDP within a second of taking UDP for blocked")
	}
	h.answerSTUN(sent)
	if h.c.udpBlocked() {
		t.Fatal("UDP still taken for blocked after a STUN answer")
	}
	// And we register over UDP at once: the registration's next try was
	// put off while UDP was blocked (a 20%-lossy start waited 25 s).
	h.take()
	h.advance(tickInterval)
	if h.registrations(h.take()) == 0 {
		t.Fatal("no registration within a tick of UDP working again")
	}
}

func TestControlIntroducedPeerGoesDirect(t *testing.T) {
	h := newHarness(t)
	h.register()
	h.introduce(peerAddr)
	p := h.peer()
	if r := p.ep.Route(); !r.Relayed() || r.Dst != rvAddr {
		t.Fatalf("route %+v right after the intro, want the relay", r)
	}
	if why := p.relayReason(h.now); why != "punching in progress" {
		t.Fatalf("relayed because %q", why)
	}
	sent := h.take()
	if h.answerProbes(sent, peerAddr) == 0 {
		t.Fatal("no probe to the peer's public endpoint")
	}
	if r := p.ep.Route(); r.Relayed() || r.Dst != peerAddr {
		t.Fatalf("route %+v after the peer answered, want direct to %v", r, peerAddr)
	}
}

func TestControlReintroductionAtNewEndpoint(t *testing.T) {
	h := newHarness(t)
	h.goDirect()
	p := h.peer()
	if p.ep.Route().Relayed() {
		t.Fatal("not direct")
	}
	// The peer restarted behind its NAT: a new public port.
	moved := netip.AddrPortFrom(peerAddr.Addr(), peerAddr.Port()+1)
	h.advance(time.Second)
	h.introduce(moved)
	if r := p.ep.Route(); !r.Relayed() {
		t.Fatalf("route %+v after an intro at a new endpoint, want the relay at once", r)
	}
	if h.answerProbes(h.take(), moved) == 0 {
		t.Fatal("no probe to the peer's new endpoint")
	}
	if r := p.ep.Route(); r.Dst != moved {
		t.Fatalf("route %+v, want direct to %v", r, moved)
	}
}

func TestControlNetworkChange(t *testing.T) {
	h := newHarness(t)
	h.goDirect()
	h.advance(nat.PunchDuration)
	h.take()
	h.c.networkChanged(h.now)
	h.c.tick(h.now)
	sent := h.take()
	registrations := h.registrations(sent)
	stun, probes := 0, 0
	for _, s := range sent {
		if nat.IsSTUN(s.pkt) {
			stun++
		}
	}
	peerBodies, dsts := h.opened(sent, &h.peerShared)
	for i, b := range peerBodies {
		if _, ok := b.(*wire.Ping); ok && dsts[i] == peerAddr {
			probes++
		}
	}
	if registrations == 0 || stun == 0 || probes == 0 {
		t.Fatalf("after a network change: %d registrations, %d STUN requests, %d probes of the path; want each", registrations, stun, probes)
	}
	if h.c.mapping != nat.MappingUnknown {
		t.Fatalf("NAT %v right after a network change, want unknown until STUN answers", h.c.mapping)
	}
}

func TestControlTCPFallbackAndReturn(t *testing.T) {
	h := newHarness(t)
	dialed := make(chan net.Conn, 2)
	h.c.dial = func(context.Context, string, string) (net.Conn, error) {
		ours, theirs := net.Pipe()
		dialed <- theirs
		return ours, nil
	}
	defer func() {
		close(h.c.done)
		h.c.cancel()
		h.c.shutdown()
		h.c.workers.Wait()
	}()
	h.c.tick(h.now)
	h.advance(udpGiveUp + tickInterval)
	if !h.c.udpBlocked() {
		t.Fatal("UDP not taken for blocked")
	}
	var rv *wire.Stream
	select {
	case c := <-dialed:
		rv = wire.NewStream(c)
		defer rv.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no TCP connection to the rendezvous")
	}
	// Registered over TCP.
	buf := make([]byte, wire.MaxStreamDatagram)
	deadline := time.Now().Add(5 * time.Second)
	for !h.c.servers[0].reg.Registered() {
		if time.Now().After(deadline) {
			t.Fatal("not registered over TCP")
		}
		if h.c.servers[0].stream == nil {
			// The dialer's goroutine is handing the stream over.
			select {
			case f := <-h.c.actions:
				f()
			case <-time.After(time.Until(deadline)):
			}
			continue
		}
		h.advance(tickInterval)
		rv.SetReadDeadline(time.Now().Add(time.Second))
		n, err := rv.Read(buf)
		if err != nil {
			t.Fatalf("reading the TCP stream: %v", err)
		}
		if bodies, _ := h.opened([]sentPacket{{pkt: buf[:n]}}, &h.rvShared); len(bodies) == 1 {
			if _, ok := bodies[0].(*wire.Register); ok {
				ack := &wire.RegisterAck{Time: h.clock.Next(uint64(h.now.UnixNano())), Observed: ourPub, Flags: wire.AckRelay}
				rv.Write(wire.Seal(nil, ack.Type(), h.rvPriv.Public(), &h.rvShared, ack.Append(nil)))
				h.c.handle(<-h.c.in) // what the stream's reader queued
			}
		}
	}
	// UDP comes back: the STUN asked over UDP at the refresh is answered,
	// and TCP is left.
	h.take()
	h.advance(wire.RefreshInterval + time.Second)
	h.answerSTUN(h.take())
	if h.c.udpBlocked() {
		t.Fatal("still taking UDP for blocked after a STUN answer over UDP")
	}
	rv.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := rv.Read(buf); err != nil {
			break // the peer closed its TCP connection
		}
	}
}

// TestControlSTUNTableBounded: requests to a rendezvous that never answers
// are forgotten after stunLifetime, so the table does not grow.
func TestControlSTUNTableBounded(t *testing.T) {
	h := newHarness(t)
	h.c.tick(h.now)
	h.advance(10 * time.Minute)
	n := len(h.c.stun)
	if max := int(stunLifetime/time.Second) + 2; n > max {
		t.Fatalf("%d STUN requests remembered after 10 minutes of silence, want at most %d", n, max)
	}
}

// TestControlResumeIsANetworkChange: a tick 200 s late (the process was
// frozen) leaves the direct path for the relay, registers again at once,
// tells the data path, and starts a new handshake with every peer.
func TestControlResumeIsANetworkChange(t *testing.T) {
	h := newHarness(t)
	h.goDirect()
	h.advance(time.Second)
	h.take()
	h.setNow(h.now.Add(200 * time.Second))
	h.c.tick(h.now)
	// The data path drops initiations while the control plane has not
	// ticked for a while, and a moment after Resumed: the waking tick's
	// Alive coming before Resumed would open a gap in which the backlog's
	// initiations, made long ago, are answered (seen in the lab: no session
	// for 5 s after a 200-s freeze).
	if !h.data.aliveAtResume.Before(h.now.Add(-100 * time.Second)) {
		t.Errorf("data path told of the waking tick (%v) before the resume", h.data.aliveAtResume)
	}
	p := h.peer()
	if r := p.ep.Route(); !r.Relayed() {
		t.Errorf("route %+v after the freeze, want the relay", r)
	}
	if h.data.resumed != 1 || h.c.wg.(*fakeWireGuard).rehandshakes != 1 {
		t.Errorf("data path told %d times, %d new handshakes; want 1 and 1", h.data.resumed, h.c.wg.(*fakeWireGuard).rehandshakes)
	}
	if h.registrations(h.take()) == 0 {
		t.Error("no registration right after the freeze")
	}
	// Ticks on time after that are no resume.
	h.advance(time.Second)
	if h.data.resumed != 1 {
		t.Errorf("%d resumes after ticks on time", h.data.resumed)
	}
}
