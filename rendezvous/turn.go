package rendezvous

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/pion/stun/v3"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// TURN relays: the rendezvous hands peers TURN servers (coturn, say) to
// relay through, with credentials in TURN's REST scheme that the servers
// check against a secret they share with the rendezvous alone. Peers never
// see the secret; what they get expires. And it passes each peer's relayed
// address to the other peer of a mutually configured pair, as it passes
// endpoints in introductions: never to anyone else.

// DefaultTURNTTL is how long TURN credentials stay valid. Peers allocate
// anew with fresh ones before they expire (a TURN server refuses to
// refresh an allocation once its username's time has passed), so a long
// life means few moves; a day is what coturn's documentation suggests.
const DefaultTURNTTL = 24 * time.Hour

// TURNConfig names the TURN servers a rendezvous hands out.
type TURNConfig struct {
	URIs   []string      // RFC 7065 URIs, tried by peers in this order
	Secret []byte        // coturn's static-auth-secret
	TTL    time.Duration // of the credentials; 0 means DefaultTURNTTL
}

func (c TURNConfig) enabled() bool { return len(c.URIs) > 0 }

func (c TURNConfig) ttl() time.Duration {
	if c.TTL > 0 {
		return c.TTL
	}
	return DefaultTURNTTL
}

// TURNCredentials returns the username and password that a TURN server
// with secret takes until expires, for the peer with public key peer: the
// username is "<expiry>:<peer>" (coturn reads the time before the colon;
// the rest names the peer in its logs), the password
// base64(HMAC-SHA1(secret, username)).
func TURNCredentials(secret []byte, peer key.Key, expires time.Time) (username, password string) {
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + hex.EncodeToString(peer[:8])
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// turnCredentials hands registered peers TURN credentials: computed
// from the config alone, it holds no state of its own but what it writes
// into the peer's record, under the registry's lock.
type turnCredentials struct {
	cfg   TURNConfig
	clock *lockedClock
	stats *Stats
}

func (t *turnCredentials) enabled() bool { return t.cfg.enabled() }

// offerDue offers peer fresh credentials if those it was offered last
// pass half their life by now.
func (t *turnCredentials) offerDue(peer key.Key, rec *peerRecord, now time.Time, out *outgoing) {
	if t.cfg.enabled() && rec.offered.Sub(now) < t.cfg.ttl()/2 {
		t.offer(peer, rec, now, out)
	}
}

// offer sends peer, registered as rec, fresh TURN credentials.
func (t *turnCredentials) offer(peer key.Key, rec *peerRecord, now time.Time, out *outgoing) {
	expires := now.Add(t.cfg.ttl())
	user, pass := TURNCredentials(t.cfg.Secret, peer, expires)
	rec.offered = expires
	out.add(rec.destination, &wire.TURNOffer{Time: t.clock.stamp(now), Expires: uint64(expires.Unix()),
		Username: user, Password: pass, URIs: t.cfg.URIs})
	t.stats.TURNOffers.Add(1)
}

// CheckTURNURI reports whether u is a TURN URI peers can use (RFC 7065):
// turn: or turns:, a host, a port or none, and a transport of udp or tcp
// or none.
func CheckTURNURI(u string) error {
	parsed, err := stun.ParseURI(u)
	if err != nil {
		return fmt.Errorf("%q: %w", u, err)
	}
	if parsed.Scheme != stun.SchemeTypeTURN && parsed.Scheme != stun.SchemeTypeTURNS {
		return fmt.Errorf("%q: not a TURN URI (turn:host:port or turns:host:port)", u)
	}
	if parsed.Port < 1 || parsed.Port > 65535 {
		return fmt.Errorf("%q: port %d out of range", u, parsed.Port)
	}
	if len(u) > wire.MaxTURNString {
		return fmt.Errorf("%q: longer than %d bytes", u, wire.MaxTURNString)
	}
	return nil
}
