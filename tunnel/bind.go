package tunnel

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/tunnel/key"
)

// Bind is the peer's one UDP socket. It wraps wireguard-go's StdNetBind, so
// WireGuard keeps its batched, offloaded I/O, and shares the socket with the
// control plane: STUN, rendezvous messages and punch probes ride on the very
// NAT mapping that WireGuard uses.
//
// Receiving, it hands every packet that is not WireGuard to the control
// plane and zeroes its size, which wireguard-go skips. Sending, it routes a
// rendezvous-managed peer's packets to the path the control plane chose for
// that peer (see PeerEndpoint).
type Bind struct {
	std     conn.Bind
	control func(pkt []byte, src netip.AddrPort) // must not keep pkt

	mu        sync.Mutex
	endpoints map[key.Key]*PeerEndpoint
	// byAddr maps a path's address to its peer's endpoint, so packets
	// arriving on a chosen path carry that endpoint and WireGuard's roaming
	// keeps following the control plane. Copy on write; read per packet.
	byAddr atomic.Pointer[map[netip.AddrPort]*PeerEndpoint]

	port    atomic.Uint32
	Dropped atomic.Uint64 // packets that were neither WireGuard nor ours
}

// PeerEndpoint is the WireGuard endpoint of a peer whose address the control
// plane finds. WireGuard is configured with it once; when the path changes,
// only the endpoint's destination changes, so traffic follows without any
// reconfiguration. Until a path exists, the latest handshake initiation is
// held and sent the moment one is confirmed.
type PeerEndpoint struct {
	peer key.Key
	dst  atomic.Pointer[conn.StdNetEndpoint]

	mu        sync.Mutex
	handshake []byte // held initiation, sent when a path appears
}

// endpointPrefix names a PeerEndpoint in UAPI's endpoint= line.
const endpointPrefix = "punchtun-peer/"

var (
	_ conn.Bind     = (*Bind)(nil)
	_ conn.Endpoint = (*PeerEndpoint)(nil)
)

// NewBind returns a Bind that passes control packets to control, which is
// called on WireGuard's receive goroutines and must copy what it keeps.
func NewBind(control func(pkt []byte, src netip.AddrPort)) *Bind {
	b := &Bind{
		std:       conn.NewStdNetBind(),
		control:   control,
		endpoints: make(map[key.Key]*PeerEndpoint),
	}
	b.byAddr.Store(&map[netip.AddrPort]*PeerEndpoint{})
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
	b.port.Store(uint32(actual))
	return fns, actual, nil
}

// Port is the port the socket is bound to, 0 before Open.
func (b *Bind) Port() uint16 { return uint16(b.port.Load()) }

func (b *Bind) wrap(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
		byAddr := *b.byAddr.Load()
		for i := 0; i < n; i++ {
			if sizes[i] == 0 {
				continue
			}
			pkt := bufs[i][:sizes[i]]
			std, _ := eps[i].(*conn.StdNetEndpoint)
			if std == nil {
				sizes[i] = 0
				continue
			}
			src := netip.AddrPortFrom(std.Addr().Unmap(), std.Port())
			switch Classify(pkt) {
			case PacketWireGuard:
				if pe := byAddr[src]; pe != nil {
					eps[i] = pe
				}
				continue
			case PacketSTUN, PacketControl:
				b.control(pkt, src)
			default:
				b.Dropped.Add(1)
			}
			sizes[i] = 0
		}
		return n, err
	}
}

// Close closes the socket.
func (b *Bind) Close() error { return b.std.Close() }

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

// Send writes WireGuard packets to ep.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	pe, ok := ep.(*PeerEndpoint)
	if !ok {
		return b.std.Send(bufs, ep)
	}
	dst := pe.dst.Load()
	if dst == nil {
		pe.hold(bufs)
		return nil
	}
	return b.std.Send(bufs, dst)
}

// SendTo writes one control packet to dst.
func (b *Bind) SendTo(pkt []byte, dst netip.AddrPort) error {
	return b.std.Send([][]byte{pkt}, &conn.StdNetEndpoint{AddrPort: dst})
}

// PeerEndpoint returns the endpoint of peer, creating it on first use.
func (b *Bind) PeerEndpoint(peer key.Key) *PeerEndpoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	pe := b.endpoints[peer]
	if pe == nil {
		pe = &PeerEndpoint{peer: peer}
		b.endpoints[peer] = pe
	}
	return pe
}

// SetPath points pe at dst (or at nothing, with an invalid dst) and sends
// any held handshake there.
func (b *Bind) SetPath(pe *PeerEndpoint, dst netip.AddrPort) {
	b.mu.Lock()
	old := pe.dst.Load()
	next := make(map[netip.AddrPort]*PeerEndpoint, len(*b.byAddr.Load())+1)
	for a, e := range *b.byAddr.Load() {
		if e != pe {
			next[a] = e
		}
	}
	if dst.IsValid() {
		next[dst] = pe
		pe.dst.Store(&conn.StdNetEndpoint{AddrPort: dst})
	} else {
		pe.dst.Store(nil)
	}
	b.byAddr.Store(&next)
	b.mu.Unlock()

	if dst.IsValid() && (old == nil || old.AddrPort != dst) {
		if hs := pe.takeHeld(); hs != nil {
			b.SendTo(hs, dst)
		}
	}
}

func (pe *PeerEndpoint) hold(bufs [][]byte) {
	for _, p := range bufs {
		if len(p) > 0 && p[0] == wireGuardInitiation {
			pe.mu.Lock()
			pe.handshake = append(pe.handshake[:0], p...)
			pe.mu.Unlock()
		}
	}
}

func (pe *PeerEndpoint) takeHeld() []byte {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	hs := pe.handshake
	pe.handshake = nil
	return hs
}

// Path is the address pe sends to now, if any.
func (pe *PeerEndpoint) Path() netip.AddrPort {
	if d := pe.dst.Load(); d != nil {
		return d.AddrPort
	}
	return netip.AddrPort{}
}

func (pe *PeerEndpoint) ClearSrc()           {}
func (pe *PeerEndpoint) SrcToString() string { return "" }
func (pe *PeerEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// DstToString is what `wg show` prints; an unspecified address until a path
// exists, because wg needs an address it can parse.
func (pe *PeerEndpoint) DstToString() string {
	if p := pe.Path(); p.IsValid() {
		return p.String()
	}
	return "0.0.0.0:0"
}

func (pe *PeerEndpoint) DstIP() netip.Addr { return pe.Path().Addr() }

// DstToBytes feeds WireGuard's cookie (mac2) computation, which must see the
// real address.
func (pe *PeerEndpoint) DstToBytes() []byte {
	b, _ := pe.Path().MarshalBinary()
	return b
}

// PacketKind is what Classify makes of a datagram.
type PacketKind int

const (
	PacketUnknown PacketKind = iota
	PacketWireGuard
	PacketSTUN
	PacketControl
)

const wireGuardInitiation = 1

// Classify sorts a datagram that arrived on the shared socket. WireGuard is
// tested first because it is nearly all the traffic: a message type 1–4
// followed by three zero bytes. Then STUN, then punchtun's magic prefix.
func Classify(b []byte) PacketKind {
	if len(b) >= 4 && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
		return PacketWireGuard
	}
	if nat.IsSTUN(b) {
		return PacketSTUN
	}
	if wire.IsControl(b) {
		return PacketControl
	}
	return PacketUnknown
}
