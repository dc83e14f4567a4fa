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

// offerTURN sends peer, registered as reg, fresh TURN credentials. Callers hold s.mu.
func (s *Server) offerTURN(peer key.Key, reg *registration, now time.Time) {
	expires := now.Add(s.turn.ttl())
	user, pass := TURNCredentials(s.turn.Secret, peer, expires)
	reg.offered = expires
	s.send(reg, &wire.TURNOffer{Time: s.clock.Next(uint64(now.UnixNano())), Expires: uint64(expires.Unix()),
		Username: user, Password: pass, URIs: s.turn.URIs})
	s.Stats.TURNOffers.Add(1)
}

// passRelayed tells m.Peer where a TURN server relays to sender, if the two
// are mutually configured and this rendezvous hands out TURN servers.
// Callers hold s.mu.
func (s *Server) passRelayed(sender key.Key, m *wire.Relayed) {
	if !s.turn.enabled() {
		s.Stats.DropRelayOff.Add(1)
		return
	}
	_, to, ok := s.mutual(sender, m.Peer)
	if !ok {
		s.Stats.DropNotMutual.Add(1)
		return
	}
	s.send(to, &wire.Relayed{Time: s.clock.Next(uint64(time.Now().UnixNano())), Peer: sender, Addr: m.Addr})
	s.Stats.RelayedAddresses.Add(1)
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
