package portmap

import (
	"net/netip"
	"strings"
	"testing"
)

// notify is a NOTIFY as miniupnpd 2.3.9 sends it; bootID "" leaves the
// header out.
func notify(nts, bootID string) []byte {
	s := "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n" +
		"LOCATION: http://192.168.1.1:43333/rootDesc.xml\r\nSERVER: Debian UPnP/1.1 MiniUPnPd/2.3.9\r\n" +
		"NT: " + igdType2 + "\r\nUSN: uuid:3a3a6a6a-0000-4000-8000-000000000001::" + igdType2 + "\r\nNTS: " + nts + "\r\n"
	if bootID != "" {
		s += "BOOTID.UPNP.ORG: " + bootID + "\r\nCONFIGID.UPNP.ORG: 1337\r\n"
	}
	return []byte(s + "\r\n")
}

func TestParseSSDPNotify(t *testing.T) {
	for _, c := range []struct {
		name string
		b    []byte
		want ssdpNotice
		ok   bool
	}{
		{"alive", notify("ssdp:alive", "1796609085"), ssdpNotice{alive: true, bootID: 1796609085}, true},
		{"byebye", notify("ssdp:byebye", "7"), ssdpNotice{bootID: 7}, true},
		{"no boot ID (UPnP 1.0)", notify("ssdp:alive", ""), ssdpNotice{alive: true, bootID: -1}, true},
		{"update", notify("ssdp:update", "8"), ssdpNotice{}, false},
		{"the router's media server", []byte(strings.ReplaceAll(string(notify("ssdp:alive", "9")), igdType2, "urn:schemas-upnp-org:device:MediaServer:1")), ssdpNotice{}, false},
		{"its root device", []byte(strings.ReplaceAll(string(notify("ssdp:byebye", "9")), "NT: "+igdType2, "NT: upnp:rootdevice")), ssdpNotice{}, false},
		{"boot ID out of range", notify("ssdp:alive", "2147483648"), ssdpNotice{}, false},
		{"boot ID not a number", notify("ssdp:alive", "x1"), ssdpNotice{}, false},
		{"a search answer", []byte("HTTP/1.1 200 OK\r\nST: " + igdType1 + "\r\n\r\n"), ssdpNotice{}, false},
		{"a search", ssdpSearch(igdType1), ssdpNotice{}, false},
		{"too long", append(notify("ssdp:alive", "1"), strings.Repeat("x", maxSSDPAnswer)...), ssdpNotice{}, false},
		{"cut short", notify("ssdp:alive", "1")[:40], ssdpNotice{}, false},
	} {
		got, ok := parseSSDPNotify(c.b)
		if ok != c.ok || got != c.want {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

// TestBootWatch: the gateway came up anew when its boot ID changes, or
// when it is alive after a byebye; its periodic alives, the first one
// heard, and a new gateway's first tell nothing.
func TestBootWatch(t *testing.T) {
	gw, other := netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("10.0.0.1")
	alive := func(id int64) ssdpNotice { return ssdpNotice{alive: true, bootID: id} }
	var w bootWatch
	for i, s := range []struct {
		gw        netip.Addr
		n         ssdpNotice
		restarted bool
	}{
		{gw, alive(100), false},              // first heard
		{gw, alive(100), false},              // periodic
		{gw, alive(101), true},               // new boot ID
		{gw, alive(101), false},              // periodic again
		{gw, ssdpNotice{bootID: 101}, false}, // byebye: down, not yet up
		{gw, alive(101), true},               // up again in the same second
		{gw, alive(-1), false},               // a notice without boot ID
		{gw, ssdpNotice{bootID: -1}, false},  // a UPnP 1.0 router's byebye
		{gw, alive(-1), true},                // and alive
		{other, alive(5), false},             // another gateway: heard anew
		{other, alive(6), true},
	} {
		if got := w.notice(s.gw, s.n); got != s.restarted {
			t.Fatalf("step %d: %+v from %v: restarted %v, want %v", i, s.n, s.gw, got, s.restarted)
		}
	}
}
