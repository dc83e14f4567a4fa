package wire

import (
	"errors"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Relay frames: WireGuard packets through the rendezvous's relay.

// RelayMagic starts a relayed WireGuard packet. Between a peer and the
// rendezvous it is followed by the other peer's public key (the
// destination going up, the source coming down) and the WireGuard packet.
// It is not sealed: WireGuard already encrypts and authenticates the
// packet, and the rendezvous authenticates the sender by the endpoint of
// its registration.
const RelayMagic = "PTUR"

// RelayHeaderLen is what relaying adds to a WireGuard packet.
const RelayHeaderLen = len(RelayMagic) + key.Len

// IsRelay reports whether b is a relayed packet.
func IsRelay(b []byte) bool {
	return len(b) >= RelayHeaderLen && string(b[:len(RelayMagic)]) == RelayMagic
}

// AppendRelay appends the relay frame of pkt for peer to dst.
func AppendRelay(dst []byte, peer key.Key, pkt []byte) []byte {
	dst = append(dst, RelayMagic...)
	dst = append(dst, peer[:]...)
	return append(dst, pkt...)
}

// ErrShortRelay is a relay frame cut short of its header.
var ErrShortRelay = errors.New("wire: relay frame shorter than its header")

// ParseRelay splits a relay frame into the key it names and the packet it
// carries. It does not check the magic (IsRelay does).
func ParseRelay(b []byte) (peer key.Key, pkt []byte, err error) {
	if len(b) < RelayHeaderLen {
		return peer, nil, ErrShortRelay
	}
	copy(peer[:], b[len(RelayMagic):RelayHeaderLen])
	return peer, b[RelayHeaderLen:], nil
}
