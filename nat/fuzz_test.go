package nat

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"
)

// maxBindingResponse bounds a binding response: header, XOR-MAPPED-ADDRESS
// and OTHER-ADDRESS for IPv6, FINGERPRINT. Whatever a request carries, the
// answer is no longer: STUN's amplification is all a server adds.
const maxBindingResponse = 20 + 24 + 24 + 8

// FuzzBindingResponse is the rendezvous's STUN server on any bytes that look
// like STUN: no panic, and an answer, if any, is a binding response to
// that request's transaction, telling src, and bounded in size.
func FuzzBindingResponse(f *testing.F) {
	_, req := NewBindingRequest()
	f.Add(req)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("x"), stun.Fingerprint).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw)
	f.Add(req[:20])
	src := netip.MustParseAddrPort("203.0.113.21:40000")
	other := netip.MustParseAddrPort("[2001:db8::1]:3478")
	f.Fuzz(func(t *testing.T, b []byte) {
		if !IsSTUN(b) {
			return
		}
		resp, err := BindingResponse(b, src, other)
		if err != nil {
			return
		}
		if len(resp) > maxBindingResponse {
			t.Fatalf("%d-byte answer to a %d-byte request", len(resp), len(b))
		}
		res, err := ParseBindingResponse(resp)
		if err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		if res.Mapped != src || res.Other != other || string(res.TxID[:]) != string(b[8:20]) {
			t.Fatalf("answer %+v to %x", res, b)
		}
	})
}

// FuzzParseBindingResponse is a peer reading a STUN answer from anyone: no
// panic, and a result only with a valid mapped address.
func FuzzParseBindingResponse(f *testing.F) {
	_, req := NewBindingRequest()
	resp, _ := BindingResponse(req, netip.MustParseAddrPort("198.51.100.4:51820"), netip.MustParseAddrPort("203.0.113.11:3478"))
	f.Add(resp)
	f.Add(req)
	// An RFC 3489 answer: MAPPED-ADDRESS only.
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess, &stun.MappedAddress{IP: []byte{192, 0, 2, 1}, Port: 9}).Raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := ParseBindingResponse(b)
		if err != nil {
			return
		}
		if !res.Mapped.IsValid() || res.Mapped.Port() == 0 {
			t.Fatalf("result %+v without a mapped address", res)
		}
	})
}

// FuzzProbe feeds a Punch probes and answers from anyone, as the peer
// takes them once its protocol has opened them: an answer (pong) or a
// probe (ping) with any transaction ID, from any source. A probe is
// answered with one answer to its source that echoes it, and at most one
// probe back; an answer to no probe of ours never makes a path.
func FuzzProbe(f *testing.F) {
	f.Add(false, []byte{1}, []byte{203, 0, 113, 22}, uint16(40000))
	f.Add(true, []byte{1}, []byte{192, 168, 1, 3}, uint16(51820))
	f.Add(false, []byte{}, []byte{0, 0, 0, 0}, uint16(0))
	f.Fuzz(func(t *testing.T, answer bool, txBytes, ip []byte, port uint16) {
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		src := netip.AddrPortFrom(addr, port)
		var tx [12]byte
		copy(tx[:], txBytes)
		h := newHarness(len(txBytes)%2 == 0) // either side
		h.p.Start(h.now, []netip.AddrPort{public, lan}, PunchDuration)
		h.p.Tick(h.now)
		before := len(h.sent)
		if !answer {
			h.p.OnPing(h.now, src, tx)
			answers := h.sent[before:]
			if len(answers) == 0 || len(answers) > 2 {
				t.Fatalf("%d messages in answer to a ping", len(answers))
			}
			if a := answers[0]; !a.m.Answer || a.to != src || a.m.TxID != tx || a.m.Src != src {
				t.Fatalf("answer %+v to a ping from %v", a, src)
			}
		} else {
			if ev := h.p.OnPong(h.now, src, tx); ev != EventNone || h.p.Path().Addr.IsValid() {
				t.Fatalf("an unsolicited pong made a path: %v %+v", ev, h.p.Path())
			}
			if len(h.sent) != before {
				t.Fatal("a pong was answered")
			}
		}
		h.now = h.now.Add(time.Second)
		h.p.Tick(h.now)
	})
}
