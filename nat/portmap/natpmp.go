package portmap

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"
)

// NAT-PMP (RFC 6886): a 12-byte request to the gateway's port 5351, a
// 16-byte answer. Version 0; PCP servers answer it too.

const (
	natpmpVersion      = 0
	natpmpOpAddress    = 0
	natpmpOpMapUDP     = 1
	natpmpAnswer       = 128 // added to the opcode in answers
	natpmpRequestLen   = 12
	natpmpMapAnswerLen = 16
	natpmpAddrAnswer   = 12
	// ServerPort is where NAT-PMP and PCP servers listen.
	ServerPort = 5351
)

var natpmpResults = []string{"success", "unsupported version", "not authorized or refused",
	"network failure", "out of resources", "unsupported opcode"}

var errMalformed = errors.New("malformed answer")

// natpmpMapRequest asks for internal to be forwarded from external (a
// suggestion; 0: any) for lifetime (0 with external 0: delete it).
func natpmpMapRequest(internal, external uint16, lifetime time.Duration) []byte {
	b := make([]byte, natpmpRequestLen)
	b[0], b[1] = natpmpVersion, natpmpOpMapUDP
	binary.BigEndian.PutUint16(b[4:], internal)
	binary.BigEndian.PutUint16(b[6:], external)
	binary.BigEndian.PutUint32(b[8:], seconds(lifetime))
	return b
}

func natpmpAddressRequest() []byte { return []byte{natpmpVersion, natpmpOpAddress} }

// natpmpMapAnswer is a decoded answer to a map request.
type natpmpMapAnswer struct {
	epoch              uint32
	internal, external uint16
	lifetime           time.Duration
}

// parseNATPMPMap decodes the answer to a UDP map request for internal. An
// answer to something else (another opcode, another port) is not ours:
// ok false. A refusal is a *RefusedError.
func parseNATPMPMap(b []byte, internal uint16) (a natpmpMapAnswer, ok bool, err error) {
	if len(b) < 4 || b[0] != natpmpVersion || b[1] != natpmpAnswer+natpmpOpMapUDP {
		return a, false, nil
	}
	if code := binary.BigEndian.Uint16(b[2:]); code != 0 {
		return a, true, &RefusedError{Protocol: NATPMP, Code: int(code)}
	}
	if len(b) < natpmpMapAnswerLen {
		return a, true, errMalformed
	}
	a = natpmpMapAnswer{
		epoch:    binary.BigEndian.Uint32(b[4:]),
		internal: binary.BigEndian.Uint16(b[8:]),
		external: binary.BigEndian.Uint16(b[10:]),
		lifetime: time.Duration(binary.BigEndian.Uint32(b[12:])) * time.Second,
	}
	if a.internal != internal {
		return a, false, nil
	}
	return a, true, nil
}

// parseNATPMPAddress decodes the answer to an external address request:
// the router's WAN address and epoch.
func parseNATPMPAddress(b []byte) (addr netip.Addr, epoch uint32, ok bool, err error) {
	if len(b) < 4 || b[0] != natpmpVersion || b[1] != natpmpAnswer+natpmpOpAddress {
		return addr, 0, false, nil
	}
	if code := binary.BigEndian.Uint16(b[2:]); code != 0 {
		return addr, 0, true, &RefusedError{Protocol: NATPMP, Code: int(code)}
	}
	if len(b) < natpmpAddrAnswer {
		return addr, 0, true, errMalformed
	}
	return netip.AddrFrom4([4]byte(b[8:12])), binary.BigEndian.Uint32(b[4:]), true, nil
}

// seconds is d in whole seconds, as the protocols' 32-bit fields carry it.
func seconds(d time.Duration) uint32 {
	s := d / time.Second
	if s < 0 {
		return 0
	}
	if s > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(s)
}
