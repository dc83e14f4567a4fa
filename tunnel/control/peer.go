package control

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// A peer and what it needs of the rest of the control plane: values, and
// the control plane's services as small interfaces (peerHost, turnRoutes),
// all in one peerDeps that every peer shares, not the Control itself.

// peer is a peer whose address the control plane finds. It belongs to the
// control goroutine, like everything of the control plane.
type peer struct {
	deps   *peerDeps
	name   string
	key    key.Key
	shared wire.SharedKey
	ep     link.Peer // its side in the data path
	punch  *nat.Punch

	nat      nat.Mapping // the peer's NAT, as its intro says
	relayVia *server     // the rendezvous that introduced it, which relays between us
	mtu      peerMTU     // its route's path MTU
	// observed is the peer's public endpoint as each rendezvous last
	// introduced it (one per rendezvous: a hard NAT maps each apart).
	observed map[*server]netip.AddrPort
	path     string // direct, lan, relay or connecting: the route in use
	history  []PathChange

	nextQuery  time.Time
	backoff    time.Duration
	fromMemory bool // the current round probes a remembered endpoint
	// handshakeCheck: when to see whether WireGuard has a session since
	// the route last changed (see WireGuard.HandshakeIfNone).
	handshakeCheck time.Time

	turn     peerTURN     // relaying to it through TURN
	birthday peerBirthday // birthday rounds with it

	// member is its certificate if it is a member of the network,
	// memberSince when it was added.
	member      *cert.Cert
	memberSince time.Time
	// gossip is where our documents' gossip with it stands.
	gossip gossipPeer
}

// peerMTU is the path MTU of a peer's route.
type peerMTU struct {
	path      int // of the route in use, as the kernel learned it; 0 if unknown
	route     int // the MTU its AllowedIPs are routed with; 0: the interface's
	nextCheck time.Time
}

// peerTURN is where relaying to a peer through TURN stands.
type peerTURN struct {
	// addr is the peer's relayed address, sent ours as last sent to it,
	// nextSend when to send ours again while it has not answered.
	addr, sent netip.AddrPort
	nextSend   time.Time
	// seen is where our allocation reaches the peer (its NAT, opened by
	// its hellos); helloAt when to send our next hello.
	seen    netip.AddrPort
	helloAt time.Time
	// While checkUntil, the TURN route is probed: the peer's packets came
	// through the rendezvous's relay (turnRelay.peerLeft); not before
	// okUntil, when a probe was answered.
	checkUntil, okUntil time.Time
}

// peerBirthday is where birthday punching with a peer stands.
type peerBirthday struct {
	round   *birthday // our hard side of the round under way; nil: none
	next    time.Time
	backoff time.Duration
}

// peerDeps is what the peers ask of the rest of the control plane, one
// for all of them (Control.peerDeps): values set at construction and at
// Start (Control.attach), and the control plane's services.
type peerDeps struct {
	log     *slog.Logger
	pub     key.Key         // ours, which our probes are sealed with
	clock   clock           // the control plane's
	ctx     context.Context // bounds opening birthday sockets; cancelled by Stop
	dropped *atomic.Uint64  // Control.Dropped: control packets dropped
	host    peerHost
	turn    turnRoutes
	// mapper tells our NAT as the rendezvous hear of it (portMapper).
	mapper interface{ ourNAT() nat.Mapping }
	// saved is what the last run remembered, and the endpoints confirmed
	// since; kept at statePath ("" for nowhere).
	saved     State
	statePath string
	ifaceMTU  int           // the interface's (Control.reconfigure changes it)
	data      link.DataPath // set at Start (Control.attach)
	wg        WireGuard     // set at Start
	mark      uint32        // that our sockets carry; set at Start
}

// peerHost is what a peer asks of the control plane: the rendezvous
// (introductions, registering anew), whether UDP is blocked, opening what
// a peer sealed, a path MTU look-up, and work on a helper goroutine.
type peerHost interface {
	rendezvousClient
	// relaySilent follows a relayed route that fell silent: the
	// rendezvous may not know where we are any more.
	relaySilent(now time.Time)
	udpBlocked() bool
	open(pkt []byte, h wire.Header, shared *wire.SharedKey) (wire.Body, bool)
	queuePathCheck(dst netip.AddrPort)
	spawn(f func())
}

// turnRoutes is what a peer asks of the TURN relay (turnRelay): its route
// through our allocation, a check of that route gone silent, and whether
// there is an allocation.
type turnRoutes interface {
	route(p *peer) (link.Route, bool)
	check(p *peer, r link.Route, now time.Time)
	active() bool
}
