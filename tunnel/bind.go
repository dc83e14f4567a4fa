package tunnel

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/turnrelay"
)

// Bind is the peer's one UDP socket. It wraps wireguard-go's StdNetBind, so
// WireGuard keeps its batched, offloaded I/O, and shares the socket with the
// control plane: STUN, rendezvous messages and punch probes ride on the very
// NAT mapping that WireGuard uses.
//
// Receiving, it hands every packet that is not WireGuard to the control
// plane and zeroes its size, which wireguard-go skips; relayed WireGuard
// packets are unwrapped in place. Sending, it routes a rendezvous-managed
// peer's packets the way the control plane chose for that peer (see
// PeerEndpoint): straight to the peer, or wrapped for the relay.
type Bind struct {
	std     conn.Bind
	local   key.Key                              // our public key
	control func(pkt []byte, src netip.AddrPort) // must not keep pkt

	mu        sync.Mutex
	endpoints map[key.Key]*PeerEndpoint
	// Snapshots read per packet, replaced whole under mu (copy on write).
	byAddr atomic.Pointer[map[netip.AddrPort]*PeerEndpoint] // sources peers authenticated from
	relays atomic.Pointer[map[netip.AddrPort]bool]          // rendezvous that may relay to us

	framePool sync.Pool // *relayFrames: relay frames of one Send
	// Side sockets' GSO sends (sendSide): scratch buffers, and whether
	// the kernel refused GSO once.
	segmentPool sync.Pool // *[]byte of maxSegmentBuf
	noSideGSO   atomic.Bool

	// Packets that arrive off the shared socket — from a TCP relay stream
	// or a birthday-punching socket — reach WireGuard through side.
	side       chan sidePacket
	sideClosed chan struct{} // closed by Close; replaced by Open
	sidePool   sync.Pool     // *[]byte

	port atomic.Uint32
	ipv6 atomic.Pointer[net.UDPConn] // StdNetBind's IPv6 socket (bind_ipv6.go)
	// lastFixed is when WireGuard last sent to a peer with a fixed
	// Endpoint (unix nanoseconds): PeerEndpoints keep their own times.
	lastFixed atomic.Int64
	timers    map[*time.Timer]struct{}             // pending handshake copies (later); nil once closed; mu
	onMsgSize atomic.Pointer[func(netip.AddrPort)] // pathmtu.go
	// onRelayedInitiation hears of a handshake initiation that came
	// through a relay while the peer's route is direct (handshake.go).
	onRelayedInitiation atomic.Pointer[func(key.Key)]
	// onRelayedWhileTURN hears of a packet that came through a
	// rendezvous's relay while the peer's route is TURN (turn.go).
	onRelayedWhileTURN atomic.Pointer[func(key.Key)]
	Dropped            atomic.Uint64 // packets that were neither WireGuard nor ours
	// relayBytes counts the WireGuard bytes relayed, by kind of relay
	// and direction (status's relayed_bytes).
	relayBytes [relayKinds][2]atomic.Uint64
	// in and out bound the packets wireguard-go holds (inflight.go).
	in, out *inflight
}

// Kinds of relay, and directions, that relayBytes counts.
const (
	relayRendezvous = iota
	relayRendezvousTCP
	relayTURN
	relayKinds
	tx, rx = 0, 1
)

// relayKindNames name relayBytes's kinds in status and metrics.
var relayKindNames = [relayKinds]string{"rendezvous", "rendezvous-tcp", "turn"}

// PeerEndpoint is the WireGuard endpoint of a peer whose address the control
// plane finds. WireGuard is configured with it once; when the path changes,
// only its route changes, so traffic follows without reconfiguration.
// Until a route exists, the latest handshake initiation and response are
// held and sent the moment one is set: the peer's initiation may come over
// the relay a moment before our own intro gives us a route back.
type PeerEndpoint struct {
	peer   key.Key
	leader bool // our public key is the smaller: we win crossed handshakes
	route  atomic.Pointer[route]
	known  []netip.AddrPort // sources the peer authenticated from, newest last; Bind.mu

	mu sync.Mutex
	hs handshakes // handshake.go

	// When WireGuard last sent to the peer, last got a packet from it, and
	// last got one that was not a keepalive (unix nanoseconds): sending
	// without hearing back marks a path suspect, and data either way
	// marks the tunnel in use.
	lastSent, lastRecv, lastData atomic.Int64
	// directHeard: WireGuard came from the peer straight from its address
	// (not relayed) since the route last changed: it had a direct path.
	directHeard atomic.Bool
	// turnNoticed: when relayedWhileTURN last told of the peer (unix
	// nanoseconds).
	turnNoticed atomic.Int64
}

// received notes a WireGuard packet from the peer, which came from src
// (through the relay there if relayed; invalid if off the shared socket),
// and reports whether it goes on to WireGuard (handshake.go).
func (b *Bind) received(pe *PeerEndpoint, pkt []byte, src netip.AddrPort, relayed bool) bool {
	now := time.Now()
	if isHandshake(pkt) {
		if !pe.admitHandshake(pkt, via(src, relayed), now) {
			return false
		}
	}
	pe.lastRecv.Store(now.UnixNano())
	if !isKeepalive(pkt) {
		pe.lastData.Store(now.UnixNano())
	}
	return true
}

// Route is where a peer's packets go: to the peer itself, or to a relay
// that forwards them.
type Route struct {
	Dst   netip.AddrPort // the peer or the relay; invalid for no route
	Relay bool           // Dst relays for us
	// Stream, when set, carries relayed packets over TCP instead of UDP.
	Stream *wire.Stream
	// Socket, when set, sends instead of the shared socket: the socket a
	// birthday punch won with, the only one the peer's NAT lets through.
	Socket *net.UDPConn
	// TURN, when set, relays: Dst is the peer's relayed address on a TURN
	// server, reached through our own allocation (turn.go).
	TURN *turnrelay.Allocation
}

// Kind names a route as status shows it: direct, lan, relay or relay-tcp.
func (r Route) Kind() string {
	switch {
	case !r.Dst.IsValid():
		return nat.PathNone.String()
	case r.Stream != nil:
		return "relay-tcp"
	case r.Relay:
		return "relay"
	}
	return nat.KindOf(r.Dst).String()
}

// route is a Route with the endpoint std.Send takes.
type route struct {
	Route
	std conn.StdNetEndpoint
}

// sidePacket is a WireGuard packet that arrived off the shared socket.
type sidePacket struct {
	buf *[]byte
	ep  *PeerEndpoint
}

// sideQueue bounds the side packets waiting for WireGuard; more are dropped
// (and counted), as a full socket buffer would.
const sideQueue = 1024

// endpointPrefix names a PeerEndpoint in UAPI's endpoint= line.
const endpointPrefix = "punchtun-peer/"

// maxKnown bounds the source addresses remembered per peer.
const maxKnown = 8

var (
	_ conn.Bind     = (*Bind)(nil)
	_ conn.Endpoint = (*PeerEndpoint)(nil)
)

// NewBind returns the Bind of the peer whose public key is local. It passes
// control packets to control, which is called on WireGuard's receive
// goroutines and must copy what it keeps.
func NewBind(local key.Key, control func(pkt []byte, src netip.AddrPort)) *Bind {
	b := &Bind{
		std:       conn.NewStdNetBind(),
		local:     local,
		control:   control,
		endpoints: make(map[key.Key]*PeerEndpoint),
		in:        newInflight(),
		out:       newInflight(),
	}
	b.byAddr.Store(&map[netip.AddrPort]*PeerEndpoint{})
	b.relays.Store(&map[netip.AddrPort]bool{})
	b.framePool.New = func() any { return new(relayFrames) }
	b.segmentPool.New = func() any { b := make([]byte, maxSegmentBuf); return &b }
	b.side = make(chan sidePacket, sideQueue)
	b.sideClosed = make(chan struct{})
	b.timers = map[*time.Timer]struct{}{}
	b.sidePool.New = func() any { p := make([]byte, 0, 2048); return &p }
	return b
}

// Open opens the socket and wraps its receive functions.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.std.Open(port)
	if err != nil {
		return nil, 0, err
	}
	for i, fn := range fns {
		fns[i] = b.wrap(fn)
	}
	b.mu.Lock()
	closed := make(chan struct{})
	b.sideClosed = closed
	b.timers = map[*time.Timer]struct{}{}
	b.mu.Unlock()
	fns = append(fns, b.receiveSide(closed))
	b.port.Store(uint32(actual))
	b.ipv6.Store(stdIPv6Conn(b.std))
	return fns, actual, nil
}

// Close closes the socket and ends the side receive function.
func (b *Bind) Close() error {
	b.mu.Lock()
	select {
	case <-b.sideClosed:
	default:
		close(b.sideClosed)
	}
	for t := range b.timers {
		t.Stop()
	}
	b.timers = nil
	b.mu.Unlock()
	b.ipv6.Store(nil)
	return b.std.Close()
}

// SetMark sets SO_MARK on the socket.
func (b *Bind) SetMark(mark uint32) error { return b.std.SetMark(mark) }

// BatchSize is StdNetBind's.
func (b *Bind) BatchSize() int { return b.std.BatchSize() }

// ParseEndpoint returns the PeerEndpoint for "punchtun-peer/<key>", and an
// ordinary endpoint for an address.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if rest, ok := strings.CutPrefix(s, endpointPrefix); ok {
		k, err := key.Parse(rest)
		if err != nil {
			return nil, err
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		pe := b.endpoints[k]
		if pe == nil {
			return nil, errors.New("tunnel: no such peer endpoint")
		}
		return pe, nil
	}
	return b.std.ParseEndpoint(s)
}

// PeerEndpoint returns the endpoint of peer, creating it on first use.
func (b *Bind) PeerEndpoint(peer key.Key) *PeerEndpoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	pe := b.endpoints[peer]
	if pe == nil {
		pe = &PeerEndpoint{peer: peer, leader: leads(b.local, peer)}
		b.endpoints[peer] = pe
	}
	return pe
}

// RemovePeer forgets peer, which a reload removed: its packets are no
// longer told apart from strangers'.
func (b *Bind) RemovePeer(peer key.Key) {
	b.mu.Lock()
	defer b.mu.Unlock()
	pe := b.endpoints[peer]
	if pe == nil {
		return
	}
	delete(b.endpoints, peer)
	pe.route.Store(nil)
	next := make(map[netip.AddrPort]*PeerEndpoint, len(*b.byAddr.Load()))
	for a, e := range *b.byAddr.Load() {
		if e != pe {
			next[a] = e
		}
	}
	b.byAddr.Store(&next)
}

// SetRelays names the rendezvous whose relay frames are accepted.
func (b *Bind) SetRelays(addrs []netip.AddrPort) {
	m := make(map[netip.AddrPort]bool, len(addrs))
	for _, a := range addrs {
		m[a] = true
	}
	b.relays.Store(&m)
}

// Learn records that peer authenticated itself from src, so that WireGuard
// packets from there carry pe and WireGuard's roaming keeps following the
// control plane's route rather than the last source address.
func (b *Bind) Learn(pe *PeerEndpoint, src netip.AddrPort) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range pe.known {
		if k == src {
			return
		}
	}
	pe.known = append(pe.known, src)
	if len(pe.known) > maxKnown {
		pe.known = pe.known[1:]
	}
	next := make(map[netip.AddrPort]*PeerEndpoint, len(*b.byAddr.Load())+1)
	for a, e := range *b.byAddr.Load() {
		if e != pe {
			next[a] = e
		}
	}
	for _, a := range pe.known {
		next[a] = pe
	}
	b.byAddr.Store(&next)
}

// SetRoute points pe at r, or at nothing for an invalid r.Dst; a held
// handshake goes out at once.
func (b *Bind) SetRoute(pe *PeerEndpoint, r Route) {
	if !r.Dst.IsValid() {
		pe.route.Store(nil)
		return
	}
	pe.route.Store(&route{Route: r, std: conn.StdNetEndpoint{AddrPort: r.Dst}})
	pe.directHeard.Store(false)
	if hs := pe.takeHandshakes(time.Now()); len(hs) > 0 {
		b.Send(hs, pe)
	}
}

// Route is where pe sends now; its Dst is invalid while there is none.
func (pe *PeerEndpoint) Route() Route {
	if r := pe.route.Load(); r != nil {
		return r.Route
	}
	return Route{}
}

func (pe *PeerEndpoint) ClearSrc()           {}
func (pe *PeerEndpoint) SrcToString() string { return "" }
func (pe *PeerEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// DstToString is what `wg show` prints: the peer's address, or the relay's
// while relayed; an unspecified address until a route exists, because wg
// needs an address it can parse.
func (pe *PeerEndpoint) DstToString() string {
	if dst := pe.Route().Dst; dst.IsValid() {
		return dst.String()
	}
	return "0.0.0.0:0"
}

func (pe *PeerEndpoint) DstIP() netip.Addr { return pe.Route().Dst.Addr() }

// DstToBytes feeds WireGuard's cookie (mac2) computation, which must see
// the address packets go to.
func (pe *PeerEndpoint) DstToBytes() []byte {
	b, _ := pe.Route().Dst.MarshalBinary()
	return b
}

// PacketKind is what Classify makes of a datagram.
type PacketKind int

const (
	PacketUnknown PacketKind = iota
	PacketWireGuard
	PacketSTUN
	PacketControl
	PacketRelay
)

const (
	wireGuardInitiation = 1
	wireGuardResponse   = 2
	wireGuardTransport  = 4
	// wireGuardKeepaliveLen is a transport message with no payload: the
	// 16-byte header and the 16-byte tag.
	wireGuardKeepaliveLen = 32
)

func isKeepalive(p []byte) bool { return len(p) == wireGuardKeepaliveLen && p[0] == wireGuardTransport }

// Classify sorts a datagram that arrived on the shared socket. WireGuard is
// tested first because it is nearly all the traffic: a message type 1–4
// followed by three zero bytes. Then STUN, then punchtun's magic prefixes.
func Classify(b []byte) PacketKind {
	if len(b) >= 4 && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
		return PacketWireGuard
	}
	if nat.IsSTUN(b) {
		return PacketSTUN
	}
	if wire.IsRelay(b) {
		return PacketRelay
	}
	if wire.IsControl(b) {
		return PacketControl
	}
	return PacketUnknown
}
