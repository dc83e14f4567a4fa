package policy

import (
	"net/netip"
	"testing"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// ICMP errors may not carry a member's packets past the destination check.

// TestICMPErrorOnlyToUs: an ICMP error about a flow this member has with
// the sender passes only when addressed to this member's end of that
// flow; addressed anywhere else (this machine's LAN, a bridge, anything
// it forwards to), it is dropped as to no address of this member's,
// whatever it quotes and carries.
func TestICMPErrorOnlyToUs(t *testing.T) {
	nk, _ := cert.NewNetworkPrivate()
	f := filterAt(t, signPolicy(t, nk, 1, laptopsToServers), laptop, server)
	out := ipv4(protoUDP, laptop, server, 5000, 9, 0)[:28]
	f.sent(out)
	pkt := append(append(icmpEcho(server, laptop, 3, 0), out...), make([]byte, 1000)...)
	if f.admit(to(pkt, "192.168.1.7")) {
		t.Error("an ICMP error about laptop's flow, addressed to an address of laptop's LAN, passes")
	}
	if got := dropped(f, "destination"); got != 1 {
		t.Errorf("%d drops counted under destination, want 1", got)
	}
	// This machine forwards a packet of another address to the server
	// (its flow is tracked): an error about it, sent to this member's
	// address, is about no flow of this member's end.
	fwd := to(ipv4(protoUDP, laptop, server, 5001, 9, 0)[:28], server.Addrs[0].String())
	copy(fwd[12:16], netip.MustParseAddr("192.168.1.7").AsSlice())
	f.sent(fwd)
	if f.admit(append(icmpEcho(server, laptop, 3, 0), fwd...)) {
		t.Error("an ICMP error to laptop about a flow whose local end is not laptop's passes")
	}
	if !f.admit(append(icmpEcho(server, laptop, 11, 0), out...)) {
		t.Error("the server's ICMP error about laptop's own flow, to laptop, is refused")
	}
	// ICMPv6: destination unreachable to another address of this machine.
	f6 := filterAt(t, signPolicy(t, nk, 1, laptopsToServers), laptop6, server6)
	out6 := ipv6(laptop6, server6, protoUDP, []byte{0x13, 0x88, 0, 9, 0, 8, 0, 0})
	f6.sent(out6)
	unreach6 := ipv6(server6, laptop6, protoICMPv6, append([]byte{1, 4, 0, 0, 0, 0, 0, 0}, out6...))
	elsewhere := append([]byte(nil), unreach6...)
	copy(elsewhere[24:40], netip.MustParseAddr("fd99::7").AsSlice())
	if f6.admit(elsewhere) {
		t.Error("an ICMPv6 error about laptop's flow, addressed to another address, passes")
	}
	if !f6.admit(unreach6) {
		t.Error("the server's ICMPv6 error about laptop's own flow is refused")
	}
}
