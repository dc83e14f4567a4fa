package rendezvous

import (
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// recordEgress is an egress that keeps what the server sends.
type recordEgress struct {
	mu   sync.Mutex
	sent [][]byte
}

func (l *recordEgress) WriteToUDPAddrPort(b []byte, _ netip.AddrPort) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, append([]byte(nil), b...))
	return len(b), nil
}

// FuzzServerHandle gives the server any datagram. It never panics, and it
// answers with nothing but STUN binding responses, except to messages
// sealed by the one client key the seeds use: to those, only with
// messages sealed to that client.
func FuzzServerHandle(f *testing.F) {
	serverKey, clientKey := key.Private{9, 9, 9}, key.Private{7, 7, 7}
	cs := wire.NewSharedKey(clientKey, serverKey.Public())
	now := uint64(time.Now().UnixNano())
	seal := func(m wire.Body) []byte { return wire.Seal(nil, m.Type(), clientKey.Public(), &cs, m.Append(nil)) }
	_, stunReq := nat.NewBindingRequest()
	for _, seed := range [][]byte{
		stunReq,
		seal(&wire.Register{Time: now, Wants: []key.Key{{1}}}),
		seal(&wire.Query{Time: now + 1, Peer: key.Key{1}}),
		seal(&wire.Deregister{Time: now + 2}),
		seal(&wire.Ping{}),
		wire.AppendRelay(nil, key.Key{1}, []byte{4, 0, 0, 0, 1}),
		[]byte(wire.Magic),
		{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42},
	} {
		f.Add(seed)
	}
	s := NewServer(Config{PrivateKey: serverKey, Relay: true, Logger: slog.New(slog.DiscardHandler), SourceRate: -1, KeyRate: -1, NewKeyRate: -1})
	defer s.Close()
	src := netip.MustParseAddrPort("198.51.100.7:40000")
	other := netip.MustParseAddrPort("203.0.113.11:3478")
	f.Fuzz(func(t *testing.T, b []byte) {
		l := &recordEgress{}
		s.handle(l, other, append([]byte(nil), b...), src)
		for _, out := range l.sent {
			if nat.IsSTUN(out) {
				if _, err := nat.ParseBindingResponse(out); err != nil {
					t.Fatalf("STUN answer %x: %v", out, err)
				}
				continue
			}
			h, err := wire.ParseHeader(out)
			if err != nil || h.Sender != serverKey.Public() {
				t.Fatalf("answer %x to %x is neither STUN nor the server's", out, b)
			}
			if _, err := wire.Open(out, &cs); err != nil {
				t.Fatalf("answer to %x is sealed to someone else", b)
			}
			if in, err := wire.ParseHeader(b); err != nil || in.Sender != clientKey.Public() {
				t.Fatalf("a sealed answer to %x, which the client did not seal", b)
			}
		}
	})
}
