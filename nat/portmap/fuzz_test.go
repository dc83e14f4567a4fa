package portmap

import (
	"net/netip"
	"testing"
	"time"
)

// The decoders of what a router (or anyone on the LAN) sends: none may
// panic, and what they accept must be consistent.

func FuzzNATPMP(f *testing.F) {
	f.Add(natpmpRouter(0)(natpmpMapRequest(4000, 4000, time.Hour)))
	f.Add(natpmpRouter(2)(natpmpMapRequest(4000, 4000, time.Hour)))
	f.Add(natpmpRouter(0)(natpmpAddressRequest()))
	f.Fuzz(func(t *testing.T, b []byte) {
		if a, ok, err := parseNATPMPMap(b, 4000); ok && err == nil && a.internal != 4000 {
			t.Fatalf("took an answer for port %d", a.internal)
		}
		if addr, _, ok, err := parseNATPMPAddress(b); ok && err == nil && !addr.Is4() {
			t.Fatalf("address %v", addr)
		}
		parseAnnounce(b)
	})
}

func FuzzPCP(f *testing.F) {
	var nonce [12]byte
	req := pcpMapRequest(netip.MustParseAddr("192.168.1.2"), 4000, netip.AddrPort{}, time.Hour, nonce)
	f.Add(pcpRouter(0)(req))
	f.Add(pcpRouter(2)(req))
	f.Add(pcpRouter(0)(req)[:pcpHeaderLen])
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok, err := parsePCPMap(b, 4000, nonce)
		if ok && err == nil && (len(b) < pcpHeaderLen+pcpMapLen || a.external.Addr().Is4In6()) {
			t.Fatalf("took %d bytes as %+v", len(b), a)
		}
	})
}

func FuzzSSDP(f *testing.F) {
	gw := netip.MustParseAddr("192.168.1.1")
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: " + igdType1 + "\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: " + igdType2 + "\r\nLOCATION: http://[::ffff:192.168.1.1]:1/\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if u, ok := parseSSDPAnswer(b, gw); ok && !onGateway(u, gw) {
			t.Fatalf("took %v, not on the gateway", u)
		}
	})
}

func FuzzSSDPNotify(f *testing.F) {
	f.Add(notify("ssdp:alive", "1796609085"))
	f.Add(notify("ssdp:byebye", ""))
	gw := netip.MustParseAddr("192.168.1.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		n, ok := parseSSDPNotify(b)
		if ok && (len(b) > maxSSDPAnswer || n.bootID < -1 || n.bootID >= 1<<31) {
			t.Fatalf("took %d bytes as %+v", len(b), n)
		}
		var w bootWatch
		if ok && w.notice(gw, n) {
			t.Fatal("the first notice heard told of a restart")
		}
	})
}

func FuzzRouteTable(f *testing.F) {
	f.Add([]byte("eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if gw, ok := parseRouteTable(b); ok && (!gw.Is4() || gw.IsUnspecified()) {
			t.Fatalf("gateway %v", gw)
		}
	})
}
