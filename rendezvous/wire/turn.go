package wire

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// TURNOffer tells a peer which TURN servers may relay its traffic and the
// credentials to allocate there with: TURN's REST scheme, a username that
// ends at Expires and a password derived from it with a secret only the
// rendezvous and the TURN servers know. The rendezvous sends one with each
// introduction and, before the last one expires, with a registration's
// acknowledgement. Peers that predate it drop the unknown type, as they
// should.
type TURNOffer struct {
	Time     uint64
	Expires  uint64   // Unix seconds: after it, the TURN servers refuse the credentials
	Username string   // as the TURN server expects it, e.g. "1764500000:punchtun"
	Password string   // base64 of HMAC-SHA1(secret, Username)
	URIs     []string // RFC 7065 TURN URIs: turn:host:port[?transport=tcp], turns:host:port
}

// Relayed says where a TURN server relays to a peer. The peer sends it to
// the rendezvous naming the other peer of the pair; the rendezvous, if the
// two are mutually configured, passes it on with Peer set to the sender.
// Addr is invalid when the sender no longer has a relayed address.
type Relayed struct {
	Time uint64
	Peer key.Key
	Addr netip.AddrPort
}

// Bounds of an offer, so that its message stays within MaxControlLen.
const (
	MaxTURNURIs   = 8
	MaxTURNString = 255
)

func (m *TURNOffer) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Time)
	b = binary.BigEndian.AppendUint64(b, m.Expires)
	b = appendString(b, m.Username)
	b = appendString(b, m.Password)
	uris := m.URIs[:min(len(m.URIs), MaxTURNURIs)]
	b = append(b, byte(len(uris)))
	for _, u := range uris {
		b = appendString(b, u)
	}
	return b
}

func (m *Relayed) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Time)
	b = append(b, m.Peer[:]...)
	return appendAddrPort(b, m.Addr)
}

func parseTURNOffer(r *reader) *TURNOffer {
	m := &TURNOffer{Time: r.uint64(), Expires: r.uint64(), Username: r.string(), Password: r.string()}
	n := int(r.byte())
	if n > MaxTURNURIs {
		r.err = ErrTooMany
		return nil
	}
	for i := 0; i < n && r.err == nil; i++ {
		m.URIs = append(m.URIs, r.string())
	}
	return m
}

func parseRelayed(r *reader) *Relayed {
	m := &Relayed{Time: r.uint64(), Peer: r.key(), Addr: r.addrPort()}
	switch {
	case m.Addr.Port() != 0 || !m.Addr.Addr().IsUnspecified():
	case m.Addr.Addr().Is6():
		m.Addr = netip.AddrPort{} // "no relayed address", as Append wrote it
	case r.err == nil:
		r.err = errors.New("wire: relayed address 0.0.0.0:0") // not the one encoding of "none"
	}
	return m
}

// appendString appends s with a one-byte length, cut to MaxTURNString.
func appendString(b []byte, s string) []byte {
	s = s[:min(len(s), MaxTURNString)]
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func (r *reader) string() string {
	v := make([]byte, r.byte())
	r.read(v)
	return string(v)
}
