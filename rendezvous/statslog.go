package rendezvous

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"unicode"
)

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
