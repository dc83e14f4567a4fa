// Package nat is punchtun's view of the network between peers: STUN, local
// candidates, and hole punching.
package nat

import (
	"errors"
	"net"
	"net/netip"

	"github.com/pion/stun/v2"
)

// STUNTxID identifies one STUN transaction.
type STUNTxID = [stun.TransactionIDSize]byte

// IsSTUN reports whether b looks like a STUN message (RFC 8489 §5: first two
// bits zero and the magic cookie at offset 4).
func IsSTUN(b []byte) bool { return stun.IsMessage(b) }

// NewBindingRequest builds a STUN binding request with a fresh transaction ID.
func NewBindingRequest() (STUNTxID, []byte) {
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	return m.TransactionID, m.Raw
}

// BindingResult is what a binding success response tells.
type BindingResult struct {
	TxID   STUNTxID
	Mapped netip.AddrPort // our address as the server saw it
	// Other is the server's alternate address (RFC 5780 OTHER-ADDRESS), if
	// it has one: asking there too tells whether the NAT maps per
	// destination.
	Other netip.AddrPort
}

// ParseBindingResponse reads a binding success response.
func ParseBindingResponse(b []byte) (BindingResult, error) {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return BindingResult{}, err
	}
	r := BindingResult{TxID: m.TransactionID}
	if m.Type != stun.BindingSuccess {
		return r, errors.New("stun: not a binding success response: " + m.Type.String())
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(m); err != nil {
		// RFC 3489 servers answer with MAPPED-ADDRESS only.
		var plain stun.MappedAddress
		if err2 := plain.GetFrom(m); err2 != nil {
			return r, err
		}
		xor.IP, xor.Port = plain.IP, plain.Port
	}
	var ok bool
	if r.Mapped, ok = addrPortFromIP(xor.IP, xor.Port); !ok {
		return r, errors.New("stun: bad mapped address")
	}
	var other stun.OtherAddress
	if other.GetFrom(m) == nil {
		r.Other, _ = addrPortFromIP(other.IP, other.Port)
	}
	return r, nil
}

// BindingResponse answers a binding request from src, or returns an error
// for anything else: a STUN server answers nothing but binding requests.
// other, if valid, is advertised as the server's alternate address.
func BindingResponse(req []byte, src, other netip.AddrPort) ([]byte, error) {
	m := &stun.Message{Raw: append([]byte(nil), req...)}
	if err := m.Decode(); err != nil {
		return nil, err
	}
	if m.Type != stun.BindingRequest {
		return nil, errors.New("stun: not a binding request: " + m.Type.String())
	}
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(m.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: src.Addr().Unmap().AsSlice(), Port: int(src.Port())},
	}
	if other.IsValid() {
		setters = append(setters, &stun.OtherAddress{IP: other.Addr().AsSlice(), Port: int(other.Port())})
	}
	resp, err := stun.Build(append(setters, stun.Fingerprint)...)
	if err != nil {
		return nil, err
	}
	return resp.Raw, nil
}

func addrPortFromIP(ip net.IP, port int) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 0xffff {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
}
