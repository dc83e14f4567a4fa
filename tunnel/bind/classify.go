package bind

import (
	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
)

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

// isRelayedControl reports whether a relay frame carries a control message:
// a probe of `punchtun ping`, or one through a TURN relay, which the
// control plane opens.
func isRelayedControl(frame []byte) bool {
	_, inner, err := wire.ParseRelay(frame)
	return err == nil && Classify(inner) == PacketControl
}

func isKeepalive(p []byte) bool { return len(p) == wireGuardKeepaliveLen && p[0] == wireGuardTransport }

func isHandshake(p []byte) bool {
	return len(p) > 0 && (p[0] == wireGuardInitiation || p[0] == wireGuardResponse)
}
