package bind

import (
	"testing"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

func TestClassify(t *testing.T) {
	_, stunReq := nat.NewBindingRequest()
	var k key.Key
	shared := wire.NewSharedKey(key.Private{}, k)
	control := wire.Seal(nil, wire.TypePing, k, &shared, (&wire.Ping{}).Append(nil))
	for _, tc := range []struct {
		name string
		pkt  []byte
		want PacketKind
	}{
		{"initiation", append([]byte{1, 0, 0, 0}, make([]byte, 144)...), PacketWireGuard},
		{"response", append([]byte{2, 0, 0, 0}, make([]byte, 88)...), PacketWireGuard},
		{"cookie", append([]byte{3, 0, 0, 0}, make([]byte, 60)...), PacketWireGuard},
		{"data", append([]byte{4, 0, 0, 0}, make([]byte, 28)...), PacketWireGuard},
		{"type 5", []byte{5, 0, 0, 0, 0, 0, 0, 0}, PacketUnknown},
		{"type 1, nonzero reserved", []byte{1, 0, 1, 0, 0, 0, 0, 0}, PacketUnknown},
		{"stun", stunReq, PacketSTUN},
		{"control", control, PacketControl},
		{"magic only", []byte(wire.Magic), PacketControl}, // sorted here, rejected by its parser
		{"empty", nil, PacketUnknown},
		{"short", []byte{4, 0}, PacketUnknown},
		{"garbage", []byte("GET / HTTP/1.1\r\n"), PacketUnknown},
	} {
		if got := Classify(tc.pkt); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	_, stunReq := nat.NewBindingRequest()
	f.Add(stunReq)
	f.Add([]byte{4, 0, 0, 0, 1})
	f.Add([]byte(wire.Magic + "xxxx"))
	f.Add(wire.AppendRelay(nil, key.Key{1}, []byte{4, 0, 0, 0, 1}))
	f.Add([]byte{1, 0, 0})
	// Every datagram gets exactly one kind, by the definitions in
	// Classify's comment, WireGuard first; and a relay frame's inner
	// packet, classified again as the Bind does, never panics.
	f.Fuzz(func(t *testing.T, b []byte) {
		isWG := len(b) >= 4 && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0
		var want PacketKind
		switch {
		case isWG:
			want = PacketWireGuard
		case nat.IsSTUN(b):
			want = PacketSTUN
		case wire.IsRelay(b):
			want = PacketRelay
		case wire.IsControl(b):
			want = PacketControl
		}
		got := Classify(b)
		if got != want {
			t.Fatalf("Classify(%x) = %v, want %v", b, got, want)
		}
		if got == PacketRelay {
			_, inner, _ := wire.ParseRelay(b)
			Classify(inner)
		}
	})
}
