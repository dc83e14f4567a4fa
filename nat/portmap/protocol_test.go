package portmap

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// fakeServer answers NAT-PMP and PCP on loopback as answer says; the
// protocols' wire formats are checked byte by byte here, and against the
// real miniupnpd in cmd/punchtun's lab tests.
type fakeServer struct {
	conn     *net.UDPConn
	answer   func(req []byte) []byte // nil answer: stay silent
	requests chan []byte
}

func newFakeServer(t *testing.T, answer func(req []byte) []byte) (*fakeServer, *Client) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{conn: conn, answer: answer, requests: make(chan []byte, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, src, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			req := bytes.Clone(buf[:n])
			select {
			case s.requests <- req:
			default:
			}
			if b := s.answer(req); b != nil {
				conn.WriteToUDPAddrPort(b, src)
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	c := &Client{Gateway: netip.MustParseAddr("127.0.0.1"), serverPort: conn.LocalAddr().(*net.UDPAddr).Port}
	return s, c
}

// natpmpRouter answers as a NAT-PMP router with WAN address 203.0.113.21,
// mapping every port to itself plus 1, refusing with code when set.
func natpmpRouter(code uint16) func([]byte) []byte {
	return func(req []byte) []byte {
		if len(req) < 2 || req[0] != 0 {
			return []byte{0, req[1] | 128, 0, 1, 0, 0, 0, 9} // unsupported version
		}
		switch req[1] {
		case 0:
			return []byte{0, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 21}
		case 1:
			b := make([]byte, 16)
			b[1] = 129
			binary.BigEndian.PutUint16(b[2:], code)
			binary.BigEndian.PutUint32(b[4:], 9)
			copy(b[8:10], req[4:6])
			ext := binary.BigEndian.Uint16(req[4:]) + 1
			if binary.BigEndian.Uint32(req[8:]) == 0 {
				ext = 0
			}
			binary.BigEndian.PutUint16(b[10:], ext)
			copy(b[12:16], req[8:12])
			return b
		}
		return nil
	}
}

func TestNATPMPRequest(t *testing.T) {
	got := natpmpMapRequest(4000, 4001, 2*time.Hour)
	want := []byte{0, 1, 0, 0, 0x0f, 0xa0, 0x0f, 0xa1, 0, 0, 0x1c, 0x20}
	if !bytes.Equal(got, want) {
		t.Fatalf("map request % x, want % x", got, want)
	}
}

func TestNATPMPMap(t *testing.T) {
	s, c := newFakeServer(t, natpmpRouter(0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m, err := c.Map(ctx, NATPMP, 4000, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.External.String() != "203.0.113.21:4001" || m.Lifetime != time.Hour || m.Epoch != 9 {
		t.Fatalf("mapping %+v", m)
	}
	if err := c.Unmap(ctx, m); err != nil {
		t.Fatal(err)
	}
	var last []byte
	for len(s.requests) > 0 {
		last = <-s.requests
	}
	if want := natpmpMapRequest(4000, 0, 0); !bytes.Equal(last, want) {
		t.Fatalf("delete sent % x, want % x", last, want)
	}
}

// TestNATPMPRefused: each result code comes back as a RefusedError
// naming it.
func TestNATPMPRefused(t *testing.T) {
	for code, text := range map[uint16]string{2: "not authorized or refused", 3: "network failure", 4: "out of resources", 77: "unknown"} {
		_, c := newFakeServer(t, natpmpRouter(code))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Map(ctx, NATPMP, 4000, nil, time.Hour)
		cancel()
		var refused *RefusedError
		if !errors.As(err, &refused) || refused.Code != int(code) || refused.Protocol != NATPMP {
			t.Fatalf("code %d: err %v", code, err)
		}
		if want := "natpmp: router refused: result code " + strconv.Itoa(int(code)) + " (" + text + ")"; err.Error() != want {
			t.Errorf("code %d: %q, want %q", code, err, want)
		}
	}
}

// TestNoAnswerBounded: a silent gateway is given up at the context's
// deadline, after resending.
func TestNoAnswerBounded(t *testing.T) {
	s, c := newFakeServer(t, func([]byte) []byte { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Map(ctx, PCP, 4000, nil, time.Hour)
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("err %v, want no answer", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("gave up after %v", took)
	}
	if n := len(s.requests); n < 2 {
		t.Fatalf("%d requests sent, want resends", n)
	}
}

// pcpRouter answers PCP MAP requests, mapping to 203.0.113.21 and the
// suggested port, or refusing with code.
func pcpRouter(code byte) func([]byte) []byte {
	return func(req []byte) []byte {
		if len(req) < pcpHeaderLen || req[0] != 2 {
			return []byte{0, req[1] | 128, 0, 1, 0, 0, 0, 0}
		}
		b := make([]byte, pcpHeaderLen+pcpMapLen)
		b[0], b[1], b[3] = 2, 0x80|req[1], code
		copy(b[4:8], req[4:8])
		binary.BigEndian.PutUint32(b[8:], 77)
		if req[1] != pcpOpMap || len(req) < pcpHeaderLen+pcpMapLen {
			return b[:pcpHeaderLen]
		}
		copy(b[pcpHeaderLen:], req[pcpHeaderLen:pcpHeaderLen+20])
		ext := netip.MustParseAddr("203.0.113.21").As16()
		copy(b[pcpHeaderLen+20:], ext[:])
		return b
	}
}

func TestPCPMap(t *testing.T) {
	s, c := newFakeServer(t, pcpRouter(0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m, err := c.Map(ctx, PCP, 4000, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.External.String() != "203.0.113.21:4000" || m.Lifetime != time.Hour || m.Epoch != 77 {
		t.Fatalf("mapping %+v", m)
	}
	req := <-s.requests
	if len(req) != 60 || req[0] != 2 || req[1] != 1 || req[pcpHeaderLen+12] != 17 ||
		netip.AddrFrom16([16]byte(req[8:24])).Unmap().String() != "127.0.0.1" {
		t.Fatalf("request % x", req)
	}
	// A renewal repeats the nonce and asks for the same external endpoint.
	renewed, err := c.Map(ctx, PCP, 4000, &m, time.Hour)
	if err != nil || renewed.External != m.External {
		t.Fatalf("renewal %+v %v", renewed, err)
	}
	req = <-s.requests
	if [12]byte(req[pcpHeaderLen:pcpHeaderLen+12]) != m.nonce {
		t.Fatal("renewal with another nonce")
	}
}

func TestPCPRefused(t *testing.T) {
	_, c := newFakeServer(t, pcpRouter(8))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := c.Map(ctx, PCP, 4000, nil, time.Hour)
	if err == nil || err.Error() != "pcp: router refused: result code 8 (no resources)" {
		t.Fatalf("err %v", err)
	}
	// A NAT-PMP-only server answers PCP with "unsupported version".
	_, c = newFakeServer(t, natpmpRouter(0))
	if _, err := c.Map(ctx, PCP, 4000, nil, time.Hour); err == nil || err.(*RefusedError).Code != 1 {
		t.Fatalf("NAT-PMP-only server: err %v", err)
	}
	if err := c.Probe(ctx, NATPMP); err != nil {
		t.Fatalf("probe natpmp: %v", err)
	}
}

// TestPCPIgnoresOthers: answers with another nonce or port are not ours.
func TestPCPIgnoresOthers(t *testing.T) {
	var nonce [12]byte
	nonce[0] = 1
	b := pcpRouter(0)(pcpMapRequest(netip.MustParseAddr("192.168.1.2"), 4000, netip.AddrPort{}, time.Hour, nonce))
	if _, ok, err := parsePCPMap(b, 4000, nonce); !ok || err != nil {
		t.Fatalf("own answer: ok %v err %v", ok, err)
	}
	if _, ok, _ := parsePCPMap(b, 4001, nonce); ok {
		t.Fatal("took an answer for another port")
	}
	if _, ok, _ := parsePCPMap(b, 4000, [12]byte{}); ok {
		t.Fatal("took an answer with another nonce")
	}
	if _, ok, err := parsePCPMap(b[:30], 4000, nonce); !ok || !errors.Is(err, errMalformed) {
		t.Fatalf("short answer: ok %v err %v", ok, err)
	}
}

// TestMapAnyFirstWins: with one protocol refused and another mapping,
// the mapping wins.
func TestMapAnyFirstWins(t *testing.T) {
	pmp, pcp := natpmpRouter(0), pcpRouter(2)
	_, c := newFakeServer(t, func(req []byte) []byte {
		if len(req) > 0 && req[0] == 2 {
			return pcp(req)
		}
		return pmp(req)
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m, errs := c.MapAny(ctx, []Protocol{NATPMP, PCP}, 4000, nil, time.Hour)
	if m == nil || m.Protocol != NATPMP {
		t.Fatalf("mapping %+v errs %v", m, errs)
	}
	c.Gateway = netip.Addr{}
	if m, errs := c.MapAny(ctx, []Protocol{NATPMP}, 4000, nil, time.Hour); m != nil || !errors.Is(errs[NATPMP], ErrNoGateway) {
		t.Fatalf("no gateway: %+v %v", m, errs)
	}
}

func TestSSDPAnswer(t *testing.T) {
	gw := netip.MustParseAddr("192.168.1.1")
	ok := "HTTP/1.1 200 OK\r\nST: " + igdType1 + "\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n"
	if u, good := parseSSDPAnswer([]byte(ok), gw); !good || u.Port() != "5000" {
		t.Fatalf("gateway's answer: %v %v", u, good)
	}
	for name, b := range map[string]string{
		"elsewhere": "HTTP/1.1 200 OK\r\nST: " + igdType1 + "\r\nLOCATION: http://192.168.1.9:5000/rootDesc.xml\r\n\r\n",
		"by name":   "HTTP/1.1 200 OK\r\nST: " + igdType1 + "\r\nLOCATION: http://router.lan:5000/rootDesc.xml\r\n\r\n",
		"not igd":   "HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n",
		"https":     "HTTP/1.1 200 OK\r\nST: " + igdType2 + "\r\nLOCATION: https://192.168.1.1:5000/rootDesc.xml\r\n\r\n",
		"garbage":   "\x00\x01",
	} {
		if u, good := parseSSDPAnswer([]byte(b), gw); good {
			t.Errorf("%s: took %v", name, u)
		}
	}
}

func TestRouteTable(t *testing.T) {
	table := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth1\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
		"eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
	gw, ok := parseRouteTable([]byte(table))
	if !ok || gw.String() != "192.168.0.1" {
		t.Fatalf("gateway %v %v, want 192.168.0.1 (the lowest metric)", gw, ok)
	}
	if _, ok := parseRouteTable([]byte("eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n")); ok {
		t.Fatal("found a gateway in a table without a default route")
	}
}
