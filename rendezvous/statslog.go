package rendezvous

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"unicode"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// Stats counts what the server did and what it dropped, and why.
type Stats struct {
	STUN, Registrations, Introductions  atomic.Uint64
	RelayPackets, RelayBytes            atomic.Uint64
	DropMalformed, DropAuth, DropReplay atomic.Uint64
	DropUnregistered, DropNotMutual     atomic.Uint64
	DropRelayOff                        atomic.Uint64
	// TURNOffers: credentials sent; RelayedAddresses: TURN relayed
	// addresses passed from one peer of a pair to the other.
	TURNOffers, RelayedAddresses atomic.Uint64
	// DropRateLimited: over a source's, a key's or the new-key budget;
	// DropTooMany: the peer table (MaxPeers) or the replay table is full;
	// DropOversize: a control message longer than MaxControlLen;
	// DropTCPQueueFull: a TCP peer's send queue is full (it stopped
	// reading, or reads slower than its traffic comes).
	DropRateLimited, DropTooMany, DropOversize atomic.Uint64
	DropTCPQueueFull                           atomic.Uint64
	// Lookups answered, and those no member held.
	Lookups, LookupMisses atomic.Uint64
	// Refused counts members' certificates refused, by cert.Reason.
	Refused [cert.NumReasons]atomic.Uint64
	// Documents taken, and those refused: not signed by the network key,
	// not the publisher's network. DocumentsRateLimited: new documents
	// kept past their network's rate (pubRate), not fanned out now:
	// members get them by their registrations' summaries.
	// DocumentsOverBudget: past their network's budget, a revocation
	// among them acted on and sent all the same. DocumentNetworksPruned:
	// networks whose documents were forgotten, no member having
	// registered for orphanTTL.
	Documents, DocumentsRefused               atomic.Uint64
	DocumentsRateLimited, DocumentsOverBudget atomic.Uint64
	DocumentNetworksPruned                    atomic.Uint64
	// DocumentsSent and DocumentBytes: Document messages the outbox sent
	// to members, and their bytes; DocumentsPostponed: ones held back
	// by a full queue or a spent budget, sent again later.
	DocumentsSent, DocumentBytes, DocumentsPostponed atomic.Uint64
}

// StatsAttrs returns every counter of s.Stats, named in snake case
// (DropRateLimited is drop_rate_limited), and the live registrations, as
// log attributes.
func (s *Server) StatsAttrs() []slog.Attr {
	v := reflect.ValueOf(&s.Stats).Elem()
	attrs := []slog.Attr{slog.Int("registered", s.Registered())}
	for i := 0; i < v.NumField(); i++ {
		c, ok := v.Field(i).Addr().Interface().(*atomic.Uint64)
		if !ok {
			continue
		}
		attrs = append(attrs, slog.Uint64(snake(v.Type().Field(i).Name), c.Load()))
	}
	return attrs
}

// LogStats logs StatsAttrs as one line, "rendezvous stats".
func (s *Server) LogStats(log *slog.Logger) {
	log.LogAttrs(context.Background(), slog.LevelInfo, "rendezvous stats", s.StatsAttrs()...)
}

func snake(name string) string {
	rs := []rune(name)
	var b strings.Builder
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
