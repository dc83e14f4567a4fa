// Package portmap asks the home router for a port forward of the tunnel's
// UDP socket, so that a peer behind a NAT that maps per destination can
// still be reached directly: NAT-PMP (RFC 6886), PCP's MAP (RFC 6887) and
// UPnP IGD (through github.com/huin/goupnp). It asks only the default
// gateway (and for UPnP, takes SSDP answers only from the gateway's own
// address).
//
// The protocols' messages are encoded and decoded here (natpmp.go,
// pcp.go, ssdp.go, notify.go), each answer parsed defensively; Client
// does the exchanges (client.go); ListenAnnouncements and ListenSSDP hear
// the gateway tell of its restarts; and Machine (machine.go) is the pure
// state machine that decides when to ask, renew, ask again and delete,
// driven by its caller on any clock.
package portmap

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Protocol is a port mapping protocol.
type Protocol uint8

const (
	NATPMP Protocol = iota + 1
	PCP
	UPnP
)

// Protocols are all of them, in the order status lists them.
var Protocols = []Protocol{NATPMP, PCP, UPnP}

func (p Protocol) String() string {
	switch p {
	case NATPMP:
		return "natpmp"
	case PCP:
		return "pcp"
	case UPnP:
		return "upnp"
	}
	return "none"
}

// MarshalText makes a Protocol a JSON string such as "pcp".
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (p *Protocol) UnmarshalText(b []byte) error {
	for _, q := range Protocols {
		if q.String() == string(b) {
			*p = q
			return nil
		}
	}
	if string(b) == "none" {
		*p = 0
		return nil
	}
	return fmt.Errorf("unknown port mapping protocol %q", b)
}

// Mode is which protocols to ask (the PortMapping config key).
type Mode uint8

const (
	// ModeOff asks nothing: the zero Mode, so that nothing asks a router
	// unless configured to (the config's default is ModeAuto).
	ModeOff Mode = iota
	// ModeAuto asks all three at once; the first good answer wins.
	ModeAuto
	ModeNATPMP
	ModePCP
	ModeUPnP
)

// ParseMode reads auto, off, natpmp, pcp or upnp ("" is auto).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "auto":
		return ModeAuto, nil
	case "off":
		return ModeOff, nil
	case "natpmp":
		return ModeNATPMP, nil
	case "pcp":
		return ModePCP, nil
	case "upnp":
		return ModeUPnP, nil
	}
	return ModeAuto, fmt.Errorf("port mapping %q: want auto, off, natpmp, pcp or upnp", s)
}

func (m Mode) String() string {
	switch m {
	case ModeOff:
		return "off"
	case ModeNATPMP, ModePCP, ModeUPnP:
		return m.Protocols()[0].String()
	}
	return "auto"
}

// Protocols are the protocols the mode asks.
func (m Mode) Protocols() []Protocol {
	switch m {
	case ModeOff:
		return nil
	case ModeNATPMP:
		return []Protocol{NATPMP}
	case ModePCP:
		return []Protocol{PCP}
	case ModeUPnP:
		return []Protocol{UPnP}
	}
	return Protocols
}

// Mapping is a port forward the router granted.
type Mapping struct {
	Protocol Protocol
	Gateway  netip.Addr
	Internal uint16 // our socket's port
	// External is where the router forwards from. Its address is invalid
	// when the router would not tell it (miniupnpd's UPnP refuses to name
	// a reserved WAN address): the caller then knows it from STUN.
	External netip.AddrPort
	Lifetime time.Duration
	// Epoch is the router's seconds since it started mapping (NAT-PMP
	// and PCP): one that went back means it forgot its mappings.
	Epoch uint32
	nonce [12]byte    // PCP: the mapping's nonce, for renewing and deleting it
	upnp  *upnpClient // UPnP: the service that holds it
	// also are other protocols' answers for the same external port: the
	// router may hold the forward as theirs now (miniupnpd replaces a PCP
	// rule with a later NAT-PMP or UPnP one, then refuses PCP's delete).
	also []Mapping
}

// ErrNoAnswer: the gateway did not answer in time.
var ErrNoAnswer = errors.New("no answer from the gateway")

// ErrNoGateway: the host has no default IPv4 gateway to ask.
var ErrNoGateway = errors.New("no default gateway")

// RefusedError is a router's answer that refuses the mapping.
type RefusedError struct {
	Protocol Protocol
	Code     int // the protocol's result code
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s: router refused: result code %d (%s)", e.Protocol, e.Code, resultText(e.Protocol, e.Code))
}

func resultText(p Protocol, code int) string {
	var texts []string
	switch p {
	case NATPMP:
		texts = natpmpResults
	case PCP:
		texts = pcpResults
	case UPnP:
		if t, ok := upnpErrors[code]; ok {
			return t
		}
	}
	if code >= 0 && code < len(texts) {
		return texts[code]
	}
	return "unknown"
}
