package rendezvous

import (
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Registrations expire when a peer stops refreshing; replay records when
// they leave the replay window.

func (s *Server) expireLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.expire(now)
		}
	}
}

func (s *Server) expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, reg := range s.peers {
		if now.After(reg.expires) {
			s.remove(k, reg)
			s.log.Info("registration expired", "peer", k, "endpoint", reg.endpoint)
		}
	}
	for k, ls := range s.seen {
		if now.Sub(ls.at) > ReplayWindow {
			delete(s.seen, k)
		}
	}
	if n := s.docs.prune(now); n > 0 {
		s.dirty.Store(true)
		s.Stats.DocumentNetworksPruned.Add(uint64(n))
		s.log.Info("documents of networks without members forgotten", "networks", n)
	}
}

// remove forgets a registration. Callers hold s.mu.
func (s *Server) remove(k key.Key, reg *registration) {
	s.dirty.Store(true)
	s.leave(k, reg)
	delete(s.peers, k)
	if src := (source{reg.link, reg.endpoint}); s.byEndpoint[src] == k {
		delete(s.byEndpoint, src)
	}
}
