package rendezvous

import (
	"container/list"
	"sync"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// keyCache remembers the shared keys of senders that are not registered,
// least recently used first out, so that repeated messages naming one key
// cost one Curve25519 multiplication, not one each. Computing a missing key
// takes a token from newKeys, a limit shared by all senders.
type keyCache struct {
	secret  wire.Secret
	max     int
	newKeys *limiter[struct{}]

	mu    sync.Mutex
	order *list.List // of *cachedKey, most recent in front
	byKey map[key.Key]*list.Element
}

type cachedKey struct {
	peer   key.Key
	shared wire.SharedKey
}

func newKeyCache(secret wire.Secret, max int, newKeyRate float64) *keyCache {
	return &keyCache{
		secret:  secret,
		max:     max,
		newKeys: newLimiter[struct{}](newKeyRate, 1),
		order:   list.New(),
		byKey:   make(map[key.Key]*list.Element),
	}
}

// cached returns the shared key with peer if it is cached.
func (c *keyCache) cached(peer key.Key) (shared wire.SharedKey, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byKey[peer]; e != nil {
		c.order.MoveToFront(e)
		return e.Value.(*cachedKey).shared, true
	}
	return shared, false
}

// reserve takes a token from the budget for new keys, if there is one.
func (c *keyCache) reserve(now time.Time) bool {
	return c.newKeys.allow(struct{}{}, now)
}

// compute computes the shared key with peer and caches it; the caller has
// reserved it.
func (c *keyCache) compute(peer key.Key) (wire.SharedKey, error) {
	shared, err := c.secret.SharedKey(peer)
	if err != nil {
		return shared, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byKey[peer]; e != nil { // computed meanwhile by another goroutine
		c.order.MoveToFront(e)
		return shared, nil
	}
	c.byKey[peer] = c.order.PushFront(&cachedKey{peer: peer, shared: shared})
	for c.order.Len() > c.max {
		old := c.order.Remove(c.order.Back()).(*cachedKey)
		delete(c.byKey, old.peer)
	}
	return shared, nil
}

func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
