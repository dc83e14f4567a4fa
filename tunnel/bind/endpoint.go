package bind

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// PeerEndpoint is the WireGuard endpoint of a peer whose address the control
// plane finds. WireGuard is configured with it once; when the path changes,
// only its route changes, so traffic follows without reconfiguration.
// Until a route exists, the latest handshake initiation and response are
// held and sent the moment one is set: the peer's initiation may come over
// the relay a moment before our own intro gives us a route back.
type PeerEndpoint struct {
	b      *Bind
	peer   key.Key
	leader bool // our public key is the smaller: we win crossed handshakes
	route  atomic.Pointer[route]
	known  []netip.AddrPort // sources the peer authenticated from, newest last; Bind.mu

	mu sync.Mutex
	hs handshakes // its handshake messages, held and sent again

	// When WireGuard last sent to the peer, last got a packet from it,
	// last got one that was not a keepalive, last sent or got data, and
	// last sent any packet, keepalives included (unix nanoseconds): see
	// link.Activity.
	lastSent, lastRecv, lastData, lastUse, lastOut atomic.Int64
	// directHeard: WireGuard came from the peer straight from its address
	// (not relayed) since the route last changed: it had a direct path.
	directHeard atomic.Bool
	// turnNoticed: when relayedWhileTURN last told of the peer (unix
	// nanoseconds).
	turnNoticed atomic.Int64
}

var (
	_ conn.Endpoint = (*PeerEndpoint)(nil)
	_ link.Peer     = (*PeerEndpoint)(nil)
)

// route is a link.Route, held by pointer.
type route struct {
	link.Route
}

// maxKnown bounds the source addresses remembered per peer.
const maxKnown = 8

// Route is where pe sends now; its Dst is invalid while there is none.
func (pe *PeerEndpoint) Route() link.Route {
	if r := pe.route.Load(); r != nil {
		return r.Route
	}
	return link.Route{}
}

// SetRoute points pe at r, or at nothing for an invalid r; a held
// handshake goes out at once.
func (pe *PeerEndpoint) SetRoute(r link.Route) {
	if !r.Valid() {
		pe.route.Store(nil)
		return
	}
	pe.route.Store(&route{Route: r})
	pe.directHeard.Store(false)
	if hs := pe.takeHandshakes(time.Now()); len(hs) > 0 {
		pe.b.Send(hs, pe)
	}
}

// Learn records that the peer authenticated itself from src, so that
// WireGuard packets from there carry pe and WireGuard's roaming keeps
// following the control plane's route rather than the last source address.
func (pe *PeerEndpoint) Learn(src netip.AddrPort) {
	b := pe.b
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

// Activity is when WireGuard last used the peer.
func (pe *PeerEndpoint) Activity() link.Activity {
	return link.Activity{
		Sent:     time.Unix(0, pe.lastSent.Load()),
		Received: time.Unix(0, pe.lastRecv.Load()),
		Data:     time.Unix(0, pe.lastData.Load()),
		Use:      time.Unix(0, pe.lastUse.Load()),
		Any:      time.Unix(0, max(pe.lastOut.Load(), pe.lastRecv.Load())),
	}
}

// received notes a WireGuard packet from the peer, which came from src
// (through the relay there if relayed; invalid if off the shared socket),
// and reports whether it goes on to WireGuard (admitHandshake).
func (pe *PeerEndpoint) received(pkt []byte, src netip.AddrPort, relayed bool) bool {
	now := time.Now()
	if isHandshake(pkt) {
		if pkt[0] == wireGuardInitiation && pe.b != nil && pe.b.stale(now) {
			pe.b.StaleDropped.Add(1)
			return false
		}
		if !pe.admitHandshake(pkt, pe.b.via(pe, src, relayed), now) {
			pe.reanswer(pkt, now) // our response may be lost
			return false
		}
		if src.IsValid() && pkt[0] == wireGuardInitiation {
			pe.handed(pkt, now) // off the shared socket: WireGuard has it now
		}
	}
	pe.lastRecv.Store(now.UnixNano())
	if !isKeepalive(pkt) {
		pe.lastData.Store(now.UnixNano())
		if !isHandshake(pkt) {
			pe.lastUse.Store(now.UnixNano())
		}
	}
	return true
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
