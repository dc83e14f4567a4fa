package portmap

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// PCP (RFC 6887), the MAP opcode only: a 24-byte common header and a
// 36-byte MAP body each way, to and from the gateway's port 5351.

const (
	pcpVersion    = 2
	pcpOpMap      = 1
	pcpOpAnnounce = 0
	pcpResponse   = 0x80 // the R bit
	pcpHeaderLen  = 24
	pcpMapLen     = 36
	protoUDP      = 17
)

var pcpResults = []string{"success", "unsupported version", "not authorized", "malformed request",
	"unsupported opcode", "unsupported option", "malformed option", "network failure",
	"no resources", "unsupported protocol", "user exceeded quota", "cannot provide external",
	"address mismatch", "excessive remote peers"}

// pcpMapRequest asks for a UDP mapping of client:internal, suggesting
// external (any part may be zero), for lifetime (0: delete it). nonce
// names the mapping: renewals and the deletion repeat it.
func pcpMapRequest(client netip.Addr, internal uint16, external netip.AddrPort, lifetime time.Duration, nonce [12]byte) []byte {
	b := make([]byte, pcpHeaderLen+pcpMapLen)
	b[0], b[1] = pcpVersion, pcpOpMap
	binary.BigEndian.PutUint32(b[4:], seconds(lifetime))
	c16 := client.As16() // an IPv4 address as IPv4-mapped IPv6
	copy(b[8:24], c16[:])
	m := b[pcpHeaderLen:]
	copy(m[0:12], nonce[:])
	m[12] = protoUDP
	binary.BigEndian.PutUint16(m[16:], internal)
	binary.BigEndian.PutUint16(m[18:], external.Port())
	if external.Addr().IsValid() {
		e16 := external.Addr().As16()
		copy(m[20:36], e16[:])
	}
	return b
}

// pcpAnswer is a decoded MAP answer.
type pcpAnswer struct {
	lifetime time.Duration
	epoch    uint32
	external netip.AddrPort
}

// parsePCPMap decodes the answer to our MAP request of internal with
// nonce. What is not an answer to it is not ours (ok false); a refusal is
// a *RefusedError. A server that speaks only NAT-PMP answers a PCP request
// with NAT-PMP's "unsupported version": that is a refusal too.
func parsePCPMap(b []byte, internal uint16, nonce [12]byte) (a pcpAnswer, ok bool, err error) {
	if len(b) >= 4 && b[0] == natpmpVersion && b[1] >= natpmpAnswer {
		return a, true, &RefusedError{Protocol: PCP, Code: 1}
	}
	if len(b) < pcpHeaderLen || b[0] != pcpVersion || b[1] != pcpResponse|pcpOpMap {
		return a, false, nil
	}
	code := int(b[3])
	a.lifetime = time.Duration(binary.BigEndian.Uint32(b[4:])) * time.Second
	a.epoch = binary.BigEndian.Uint32(b[8:])
	if code != 0 {
		// A refusal may come without the MAP body (a malformed request).
		if len(b) >= pcpHeaderLen+pcpMapLen && [12]byte(b[pcpHeaderLen:pcpHeaderLen+12]) != nonce {
			return a, false, nil
		}
		return a, true, &RefusedError{Protocol: PCP, Code: code}
	}
	if len(b) < pcpHeaderLen+pcpMapLen {
		return a, true, errMalformed
	}
	m := b[pcpHeaderLen:]
	if [12]byte(m[0:12]) != nonce || m[12] != protoUDP || binary.BigEndian.Uint16(m[16:]) != internal {
		return a, false, nil
	}
	ext := netip.AddrFrom16([16]byte(m[20:36])).Unmap()
	a.external = netip.AddrPortFrom(ext, binary.BigEndian.Uint16(m[18:]))
	return a, true, nil
}

// parseAnnounce reads an unsolicited announcement from the gateway (sent
// to 224.0.0.1:5350 when it restarts or its address changes): PCP's
// ANNOUNCE or NAT-PMP's address answer. It returns the protocol and the
// router's epoch.
func parseAnnounce(b []byte) (p Protocol, epoch uint32, ok bool) {
	switch {
	case len(b) >= pcpHeaderLen && b[0] == pcpVersion && b[1] == pcpResponse|pcpOpAnnounce && b[3] == 0:
		return PCP, binary.BigEndian.Uint32(b[8:]), true
	case len(b) >= natpmpAddrAnswer && b[0] == natpmpVersion && b[1] == natpmpAnswer+natpmpOpAddress && b[2] == 0 && b[3] == 0:
		return NATPMP, binary.BigEndian.Uint32(b[4:]), true
	}
	return 0, 0, false
}
