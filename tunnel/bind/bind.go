// Package bind is the peer's data path: the one UDP socket WireGuard shares
// with the control plane (Bind, a conn.Bind over wireguard-go's
// StdNetBind), each peer's endpoint and the route its packets take
// (PeerEndpoint) through its link.Transport, the help WireGuard's
// handshakes get on punched paths, reading the other transports
// (tunnel/transport: a birthday round's winner, TCP relay streams, TURN
// allocations). With tunnel/tundev's TUN side it is link.DataPath.
//
// It knows nothing of the rendezvous, of punching or of why a route was
// chosen: the control plane (tunnel/control) sets routes through the
// interfaces of tunnel/link, and gets the control packets the Bind
// receives through a callback.
package bind

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
	"github.com/punchtun/punchtun/tunnel/transport"
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
	std    conn.Bind
	local  key.Key     // our public key
	events link.Events // what the control plane hears of
	// The transports on the shared socket: itself, and the rendezvous's
	// relay on it.
	shared, relay link.Transport

	mu        sync.Mutex
	endpoints map[key.Key]*PeerEndpoint
	// Snapshots read per packet, replaced whole under mu (copy on write).
	byAddr atomic.Pointer[map[netip.AddrPort]*PeerEndpoint] // sources peers authenticated from
	relays atomic.Pointer[map[netip.AddrPort]bool]          // rendezvous that may relay to us
	// turnPeers maps each peer's relayed address on a TURN server to its
	// endpoint: what comes through our allocation from there is its
	// (Serve).
	turnPeers atomic.Pointer[map[netip.AddrPort]*PeerEndpoint]

	// endpoints holds the *conn.StdNetEndpoint the shared socket sends
	// to (sharedSocket.Send).
	endpointPool sync.Pool

	// Packets that arrive off the shared socket — on the transports the
	// Bind serves (Serve) — reach WireGuard through side.
	side       chan sidePacket
	sideClosed chan struct{} // closed by Close; replaced by Open
	sidePool   sync.Pool     // *[]byte

	port atomic.Uint32
	ipv6 atomic.Pointer[net.UDPConn] // StdNetBind's IPv6 socket (stdIPv6Conn)
	// lastFixed is when WireGuard last sent to a peer with a fixed
	// Endpoint (unix nanoseconds): PeerEndpoints keep their own times.
	lastFixed atomic.Int64
	timers    map[*time.Timer]struct{} // pending handshake copies (later); nil once closed; mu
	Dropped   atomic.Uint64            // packets that were neither WireGuard nor ours
	// alive and resumedAt (unix nanoseconds): when the control plane last
	// ticked, and when it found the process had been frozen
	// (handshakes: stale initiations).
	alive, resumedAt atomic.Int64
	// StaleDropped counts the initiations dropped as sent before a freeze.
	StaleDropped atomic.Uint64
	// relayBytes counts the WireGuard bytes relayed, by kind of relay
	// and direction (status's relayed_bytes).
	relayBytes [link.NumPathKinds][2]atomic.Uint64
}

// The directions relayBytes counts.
const tx, rx = 0, 1

// sidePacket is a WireGuard packet that arrived off the shared socket.
type sidePacket struct {
	buf *[]byte
	ep  *PeerEndpoint
}

// sideQueue bounds the side packets waiting for WireGuard; more are dropped
// (and counted), as a full socket buffer would.
const sideQueue = 1024

// EndpointPrefix names a PeerEndpoint in UAPI's endpoint= line.
const EndpointPrefix = "punchtun-peer/"

var _ conn.Bind = (*Bind)(nil)

// New returns the Bind of the peer whose public key is local. It tells
// events what it sees, on WireGuard's goroutines and its own.
func New(local key.Key, events link.Events) *Bind {
	b := &Bind{
		std:       conn.NewStdNetBind(),
		local:     local,
		events:    events,
		endpoints: make(map[key.Key]*PeerEndpoint),
	}
	b.byAddr.Store(&map[netip.AddrPort]*PeerEndpoint{})
	b.relays.Store(&map[netip.AddrPort]bool{})
	b.turnPeers.Store(&map[netip.AddrPort]*PeerEndpoint{})
	b.shared = &sharedSocket{b}
	b.relay = transport.NewRelay(b.shared)
	b.endpointPool.New = func() any { return new(conn.StdNetEndpoint) }
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
		fns[i] = b.demux(fn)
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

// Port is the port the socket is bound to, 0 before Open.
func (b *Bind) Port() uint16 { return uint16(b.port.Load()) }

// ParseEndpoint returns the PeerEndpoint for "punchtun-peer/<key>", and an
// ordinary endpoint for an address.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if rest, ok := strings.CutPrefix(s, EndpointPrefix); ok {
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
		pe = &PeerEndpoint{b: b, peer: peer, leader: link.Leads(b.local, peer)}
		b.endpoints[peer] = pe
	}
	return pe
}

// Peer is PeerEndpoint, for the control plane.
func (b *Bind) Peer(k key.Key) link.Peer { return b.PeerEndpoint(k) }

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

// SetTURNPeers names the peers' relayed addresses: what comes through our
// allocation from there is theirs (Serve). A peer unknown to the Bind
// is left out.
func (b *Bind) SetTURNPeers(peers map[netip.AddrPort]key.Key) {
	m := make(map[netip.AddrPort]*PeerEndpoint, len(peers))
	b.mu.Lock()
	for addr, k := range peers {
		if pe := b.endpoints[k]; pe != nil {
			m[addr] = pe
		}
	}
	b.mu.Unlock()
	b.turnPeers.Store(&m)
}

// Shared is the shared socket, as a transport (link.DataPath).
func (b *Bind) Shared() link.Transport { return b.shared }

// Relay is the rendezvous's relay on the shared socket (link.DataPath).
func (b *Bind) Relay() link.Transport { return b.relay }

// After a freeze: Alive and Resumed.

// Alive notes that the control plane ticked at now (link.DataPath).
func (b *Bind) Alive(now time.Time) { b.alive.Store(now.UnixNano()) }

// Resumed forgets every peer's handshake messages from before the freeze
// (held, sent, to copy or to send again on a new path) and drops the
// initiations that come within resumeWindow (link.DataPath). Not those
// sent since the process woke: WireGuard's timers run the moment it does,
// before the control plane's next tick finds the freeze, and its
// initiation then, on a path the freeze killed, must still go on the
// new one (takeHandshakes): WireGuard makes no other for 5 s, the
// handshake the control plane asks for on resuming included. The control
// plane ticks far more often than staleAfter, and calls Resumed before
// Alive, so what was sent staleAfter after its last tick was sent since.
func (b *Bind) Resumed(now time.Time) {
	b.resumedAt.Store(now.UnixNano())
	woke := time.Unix(0, b.alive.Load()).Add(staleAfter)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, pe := range b.endpoints {
		pe.mu.Lock()
		pe.hs.forgetBefore(woke)
		pe.mu.Unlock()
	}
}

// stale reports whether an initiation arriving at now may be one sent
// before a freeze.
func (b *Bind) stale(now time.Time) bool {
	n := now.UnixNano()
	alive := b.alive.Load()
	return alive != 0 && n-alive > int64(staleAfter) || n-b.resumedAt.Load() < int64(resumeWindow)
}

// RelayedBytes is what each kind of relay carried since start, by the
// name status and metrics give it: bytes sent, bytes received.
func (b *Bind) RelayedBytes() map[string][2]uint64 {
	m := make(map[string][2]uint64)
	for k := range link.NumPathKinds {
		if name := k.RelayName(); name != "" {
			m[name] = [2]uint64{b.relayBytes[k][tx].Load(), b.relayBytes[k][rx].Load()}
		}
	}
	return m
}
