// Package wire is punchtun's control protocol on the wire: the messages a
// peer and the rendezvous exchange, and the probes peers send each other while
// hole punching.
//
// Every message travels in the same envelope:
//
//	magic "PTUN" (4) | type (1) | sender public key (32) | nonce (24) | box(body)
//
// box is NaCl box (Curve25519, XSalsa20, Poly1305) between the sender's and
// the receiver's WireGuard keys, so opening a message proves the sender holds
// the private key of the public key it names, and nobody else can read it.
// The magic keeps the envelope apart from WireGuard (type 1–4 then three zero
// bytes) and STUN (first two bits zero, magic cookie at offset 4) on the one
// UDP socket that carries all three.
//
// Bodies that change state (everything sent to or by the rendezvous) carry a
// Time, unix nanoseconds, that must grow strictly from one message to the
// next of the same sender: the receiver drops anything older, which defeats
// replays.
//
// docs/protocol.md has every format in one place.
package wire

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/salsa20/salsa"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Magic starts every punchtun control message.
const Magic = "PTUN"

// Type says what a message's body is.
type Type byte

// RefreshInterval is how often peers refresh their registration. It is
// below the 30 s that Linux conntrack (and many home routers) keep an idle
// UDP mapping, so the refresh is also the NAT keepalive towards the
// rendezvous. Both sides go by it: the rendezvous forgets a peer after
// missing several, and closes a TCP link idle for longer.
const RefreshInterval = 25 * time.Second

const (
	TypeRegister    Type = 1 // peer → rendezvous
	TypeRegisterAck Type = 2 // rendezvous → peer
	TypeQuery       Type = 3 // peer → rendezvous: introduce me to this peer
	TypeIntro       Type = 4 // rendezvous → both peers, at the same moment
	TypeDeregister  Type = 5 // peer → rendezvous
	// TypeTURNOffer: rendezvous → peer, with each introduction and
	// registration: TURN servers and credentials for relaying.
	TypeTURNOffer Type = 6
	// TypeRelayed: peer → rendezvous → the other peer: where a TURN
	// server relays to the sender.
	TypeRelayed Type = 7
	// Types 8 to 12 are a network's members' (TypeLookup to TypeDocument).
	TypePing Type = 16
	TypePong Type = 17
)

var typeNames = map[Type]string{
	TypeRegister:    "register",
	TypeRegisterAck: "register-ack",
	TypeQuery:       "query",
	TypeIntro:       "intro",
	TypeDeregister:  "deregister",
	TypeTURNOffer:   "turn-offer",
	TypeRelayed:     "relayed",
	TypeLookup:      "lookup",
	TypeLookupMiss:  "lookup-miss",
	TypeRefused:     "refused",
	TypePublish:     "publish",
	TypeDocument:    "document",
	TypePing:        "ping",
	TypePong:        "pong",
}

func (t Type) String() string {
	if name, ok := typeNames[t]; ok {
		return name
	}
	return fmt.Sprintf("type(%d)", byte(t))
}

const (
	headerLen = len(Magic) + 1 + 32 + 24
	// Overhead is what the envelope adds to a body.
	Overhead = headerLen + box.Overhead
	// MaxCandidates bounds the candidates one message carries.
	MaxCandidates = 16
	// MaxWants bounds the peers one registration names. 256 keys make a
	// registration of about 8.5 KB, which IP fragments; a network that
	// large should split across interfaces.
	MaxWants = 256
)

var (
	ErrNotControl = errors.New("wire: not a punchtun control message")
	ErrShort      = errors.New("wire: message truncated")
	ErrAuth       = errors.New("wire: message fails authentication")
	ErrTrailing   = errors.New("wire: trailing bytes after body")
	ErrTooMany    = errors.New("wire: too many items")
)

// IsControl reports whether b carries punchtun's magic prefix.
func IsControl(b []byte) bool {
	return len(b) >= len(Magic) && string(b[:len(Magic)]) == Magic
}

// Header is the clear part of an envelope: enough to pick the key to open it.
type Header struct {
	Type   Type
	Sender key.Key
}

// ParseHeader reads the envelope's clear part.
func ParseHeader(b []byte) (Header, error) {
	if !IsControl(b) {
		return Header{}, ErrNotControl
	}
	if len(b) < headerLen+box.Overhead {
		return Header{}, ErrShort
	}
	var h Header
	h.Type = Type(b[len(Magic)])
	copy(h.Sender[:], b[len(Magic)+1:])
	return h, nil
}

// SharedKey is the precomputed box key between two parties; computing it
// costs a Curve25519 multiplication, so callers keep one per peer.
type SharedKey [32]byte

// NewSharedKey precomputes the key between a private key and a peer's public key.
func NewSharedKey(private key.Private, peerPublic key.Key) SharedKey {
	var k SharedKey
	box.Precompute((*[32]byte)(&k), (*[32]byte)(&peerPublic), (*[32]byte)(&private))
	return k
}

// A Secret is a private key set up once for the shared keys of many peers:
// box.Precompute derives the private key's public half on every call, a
// second Curve25519 multiplication that a rendezvous meeting thousands of
// new keys a second cannot afford.
type Secret struct{ priv *ecdh.PrivateKey }

// NewSecret sets up private for SharedKey.
func NewSecret(private key.Private) (Secret, error) {
	priv, err := ecdh.X25519().NewPrivateKey(private[:])
	return Secret{priv}, err
}

// ErrLowOrderKey is a peer public key whose shared key with anyone is all
// zeros, and so known to everyone.
var ErrLowOrderKey = errors.New("wire: low-order public key")

// SharedKey is NewSharedKey(private, peerPublic), with one multiplication,
// or ErrLowOrderKey.
func (s Secret) SharedKey(peerPublic key.Key) (SharedKey, error) {
	var k SharedKey
	pub, err := ecdh.X25519().NewPublicKey(peerPublic[:])
	if err != nil {
		return k, err
	}
	dh, err := s.priv.ECDH(pub)
	if err != nil {
		return k, ErrLowOrderKey
	}
	// box.Precompute's second step: the HSalsa20 of the product.
	var zeros [16]byte
	salsa.HSalsa20((*[32]byte)(&k), &zeros, (*[32]byte)(dh), &salsa.Sigma)
	return k, nil
}

// Seal appends the envelope of body to dst: from sender (whose public key is
// named in the clear) to the holder of shared's other half.
func Seal(dst []byte, t Type, sender key.Key, shared *SharedKey, body []byte) []byte {
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic("wire: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	dst = append(dst, Magic...)
	dst = append(dst, byte(t))
	dst = append(dst, sender[:]...)
	dst = append(dst, nonce[:]...)
	return box.SealAfterPrecomputation(dst, body, &nonce, (*[32]byte)(shared))
}

// Open authenticates and decrypts the body of envelope b with shared, the key
// between the receiver and the sender named in b's header.
func Open(b []byte, shared *SharedKey) ([]byte, error) {
	if _, err := ParseHeader(b); err != nil {
		return nil, err
	}
	var nonce [24]byte
	copy(nonce[:], b[len(Magic)+1+32:headerLen])
	body, ok := box.OpenAfterPrecomputation(nil, b[headerLen:], &nonce, (*[32]byte)(shared))
	if !ok {
		return nil, ErrAuth
	}
	return body, nil
}

// Register announces a peer to the rendezvous, and refreshes it.
type Register struct {
	Time       uint64
	NAT        byte             // the peer's NAT mapping, a nat.Mapping, passed on to its peers
	Candidates []netip.AddrPort // the peer's local addresses with its socket's port
	Wants      []key.Key        // the peers in its config that it needs introduced
	// A member's network and certificate; nil Cert for none.
	Network [32]byte
	Cert    []byte
	// Docs summarizes the network's documents the member holds; nil: the
	// member does not say (an older punchtun).
	Docs *cert.Summary
}

// RegisterAck confirms a registration and tells the peer the endpoint the
// rendezvous observed it at.
type RegisterAck struct {
	Time     uint64
	Observed netip.AddrPort
	Flags    byte // AckRelay
	// Docs summarizes the network's documents the rendezvous holds, in
	// answer to a registration that carried a summary; nil otherwise.
	Docs *cert.Summary
}

// AckRelay in RegisterAck.Flags: the rendezvous relays for this peer.
const AckRelay = 1

// Query asks the rendezvous to introduce the sender to Peer.
type Query struct {
	Time uint64
	Peer key.Key
}

// Intro tells a peer where another peer can be reached.
type Intro struct {
	Time       uint64
	Peer       key.Key
	Observed   netip.AddrPort   // the endpoint the rendezvous sees that peer at
	NAT        byte             // that peer's NAT mapping, as it reported it
	Candidates []netip.AddrPort // the local candidates that peer reported
	Cert       []byte           // that peer's certificate, if it is a member
}

// Deregister withdraws a registration.
type Deregister struct {
	Time uint64
}

// Ping is a hole-punching probe; the peer answers with a Pong that echoes TxID.
type Ping struct {
	TxID [12]byte
}

// Pong answers a Ping and says where the Ping came from.
type Pong struct {
	TxID [12]byte
	Src  netip.AddrPort
}

// Body is implemented by every message body.
type Body interface {
	Type() Type
	Append(b []byte) []byte
}

func (*Register) Type() Type    { return TypeRegister }
func (*RegisterAck) Type() Type { return TypeRegisterAck }
func (*Query) Type() Type       { return TypeQuery }
func (*Intro) Type() Type       { return TypeIntro }
func (*Deregister) Type() Type  { return TypeDeregister }
func (*TURNOffer) Type() Type   { return TypeTURNOffer }
func (*Relayed) Type() Type     { return TypeRelayed }
func (*Ping) Type() Type        { return TypePing }
func (*Pong) Type() Type        { return TypePong }

func (m *Register) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Time)
	b = append(b, m.NAT)
	b = appendAddrPorts(b, m.Candidates)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Wants)))
	for _, k := range m.Wants {
		b = append(b, k[:]...)
	}
	if m.Cert == nil {
		return b
	}
	return appendSummary(appendCert(append(b, m.Network[:]...), m.Cert), m.Docs)
}

func (m *RegisterAck) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Time)
	b = appendAddrPort(b, m.Observed)
	return appendSummary(append(b, m.Flags), m.Docs)
}

func (m *Query) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Time)
	return append(b, m.Peer[:]...)
}

func (m *Intro) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Time)
	b = append(b, m.Peer[:]...)
	b = appendAddrPort(b, m.Observed)
	b = append(b, m.NAT)
	b = appendAddrPorts(b, m.Candidates)
	return appendCert(b, m.Cert)
}

func (m *Deregister) Append(b []byte) []byte {
	return binary.BigEndian.AppendUint64(b, m.Time)
}

func (m *Ping) Append(b []byte) []byte { return append(b, m.TxID[:]...) }

func (m *Pong) Append(b []byte) []byte {
	b = append(b, m.TxID[:]...)
	return appendAddrPort(b, m.Src)
}

// Parse decodes a body of type t. It rejects truncated bodies, trailing
// bytes and lists over their bounds.
func Parse(t Type, body []byte) (Body, error) {
	r := reader{b: body}
	var m Body
	switch t {
	case TypeRegister:
		reg := &Register{Time: r.uint64(), NAT: r.byte(), Candidates: r.addrPorts()}
		n := int(r.uint16())
		if n > MaxWants {
			return nil, ErrTooMany
		}
		for i := 0; i < n && r.err == nil; i++ {
			reg.Wants = append(reg.Wants, r.key())
		}
		if len(r.b) > 0 {
			r.read(reg.Network[:])
			reg.Cert = r.certificate()
			reg.Docs = r.optionalSummary()
		}
		m = reg
	case TypeRegisterAck:
		ack := &RegisterAck{Time: r.uint64(), Observed: r.addrPort(), Flags: r.byte()}
		ack.Docs = r.optionalSummary()
		m = ack
	case TypeQuery:
		m = &Query{Time: r.uint64(), Peer: r.key()}
	case TypeIntro:
		in := &Intro{Time: r.uint64(), Peer: r.key(), Observed: r.addrPort(), NAT: r.byte(), Candidates: r.addrPorts()}
		in.Cert = r.optionalCert()
		m = in
	case TypeDeregister:
		m = &Deregister{Time: r.uint64()}
	case TypeTURNOffer:
		m = parseTURNOffer(&r)
	case TypeRelayed:
		m = parseRelayed(&r)
	case TypeLookup:
		m = parseLookup(&r)
	case TypeLookupMiss:
		m = parseLookupMiss(&r)
	case TypeRefused:
		m = &Refused{Time: r.uint64(), Reason: r.byte()}
	case TypePublish:
		m = &Publish{Time: r.uint64(), Doc: r.document()}
	case TypeDocument:
		m = &Document{Time: r.uint64(), Doc: r.document()}
	case TypePing:
		p := &Ping{}
		r.read(p.TxID[:])
		m = p
	case TypePong:
		p := &Pong{}
		r.read(p.TxID[:])
		p.Src = r.addrPort()
		m = p
	default:
		return nil, fmt.Errorf("wire: unknown message %v", t)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, ErrTrailing
	}
	return m, nil
}

// An address travels as 16 bytes (IPv4 mapped into IPv6) and a port.
const addrPortLen = 18

func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	a16 := ap.Addr().As16()
	b = append(b, a16[:]...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

func appendAddrPorts(b []byte, aps []netip.AddrPort) []byte {
	if len(aps) > MaxCandidates {
		aps = aps[:MaxCandidates]
	}
	b = append(b, byte(len(aps)))
	for _, ap := range aps {
		b = appendAddrPort(b, ap)
	}
	return b
}

// reader consumes a body front to back; the first short read sets err and
// every later read returns zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) read(dst []byte) {
	if r.err != nil {
		return
	}
	if len(r.b) < len(dst) {
		r.err = ErrShort
		return
	}
	copy(dst, r.b)
	r.b = r.b[len(dst):]
}

func (r *reader) uint64() uint64 {
	var v [8]byte
	r.read(v[:])
	return binary.BigEndian.Uint64(v[:])
}

func (r *reader) byte() byte {
	var v [1]byte
	r.read(v[:])
	return v[0]
}

func (r *reader) uint16() uint16 {
	var v [2]byte
	r.read(v[:])
	return binary.BigEndian.Uint16(v[:])
}

func (r *reader) key() key.Key {
	var k key.Key
	r.read(k[:])
	return k
}

func (r *reader) addrPort() netip.AddrPort {
	var v [addrPortLen]byte
	r.read(v[:])
	a := netip.AddrFrom16([16]byte(v[:16])).Unmap()
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(v[16:]))
}

func (r *reader) addrPorts() []netip.AddrPort {
	n := int(r.byte())
	if n > MaxCandidates {
		r.err = ErrTooMany
		return nil
	}
	var aps []netip.AddrPort
	for i := 0; i < n && r.err == nil; i++ {
		aps = append(aps, r.addrPort())
	}
	return aps
}

// Clock hands out strictly increasing message times: wall-clock unix
// nanoseconds, bumped past the last one handed out so that two messages in
// the same nanosecond, or a clock step backwards, never repeat a Time.
type Clock struct{ last uint64 }

// Next returns a Time greater than every Time returned before. Not safe for
// concurrent use.
func (c *Clock) Next(now uint64) uint64 {
	if now <= c.last {
		now = c.last + 1
	}
	c.last = now
	return now
}
