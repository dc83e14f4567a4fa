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

// ParseBindingResponse reads the mapped address out of a binding success
// response.
func ParseBindingResponse(b []byte) (STUNTxID, netip.AddrPort, error) {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return STUNTxID{}, netip.AddrPort{}, err
	}
	if m.Type != stun.BindingSuccess {
		return m.TransactionID, netip.AddrPort{}, errors.New("stun: not a binding success response: " + m.Type.String())
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(m); err != nil {
		// RFC 3489 servers answer with MAPPED-ADDRESS only.
		var plain stun.MappedAddress
		if err2 := plain.GetFrom(m); err2 != nil {
			return m.TransactionID, netip.AddrPort{}, err
		}
		xor.IP, xor.Port = plain.IP, plain.Port
	}
	ap, ok := addrPortFromIP(xor.IP, xor.Port)
	if !ok {
		return m.TransactionID, netip.AddrPort{}, errors.New("stun: bad mapped address")
	}
	return m.TransactionID, ap, nil
}

// BindingResponse answers a binding request from src, or returns an error
// for anything else: a STUN server answers nothing but binding requests.
func BindingResponse(req []byte, src netip.AddrPort) ([]byte, error) {
	m := &stun.Message{Raw: append([]byte(nil), req...)}
	if err := m.Decode(); err != nil {
		return nil, err
	}
	if m.Type != stun.BindingRequest {
		return nil, errors.New("stun: not a binding request: " + m.Type.String())
	}
	resp, err := stun.Build(
		stun.NewTransactionIDSetter(m.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: src.Addr().Unmap().AsSlice(), Port: int(src.Port())},
		stun.Fingerprint,
	)
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
