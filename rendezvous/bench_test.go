package rendezvous

import (
	"log/slog"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// discardEgress is an egress that sends nothing.
type discardEgress struct{}

func (discardEgress) WriteToUDPAddrPort(b []byte, _ netip.AddrPort) (int, error) { return len(b), nil }

// BenchmarkRegisterNewKey is the server's work for the first registration
// of a key it has not seen: a Curve25519 multiplication, opening the
// envelope, the registration and its sealed acknowledgement.
func BenchmarkRegisterNewKey(b *testing.B) {
	priv, _ := key.NewPrivate()
	s := NewServer(Config{PrivateKey: priv, Relay: true, MaxPeers: math.MaxInt32,
		SourceRate: math.Inf(1), NewKeyRate: math.Inf(1), Logger: slog.New(slog.DiscardHandler)})
	defer s.Close()
	msgs := make([][]byte, b.N)
	for i := range msgs {
		p, _ := key.NewPrivate()
		shared := wire.NewSharedKey(p, priv.Public())
		m := &wire.Register{Time: uint64(time.Now().UnixNano()), Candidates: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:51820")}}
		msgs[i] = wire.Seal(nil, m.Type(), p.Public(), &shared, m.Append(nil))
	}
	src := netip.MustParseAddrPort("192.0.2.1:51820")
	b.ResetTimer()
	for _, m := range msgs {
		s.handle(discardEgress{}, netip.AddrPort{}, m, src)
	}
	if got := s.Registered(); got != b.N {
		b.Fatalf("registered %d of %d", got, b.N)
	}
}
