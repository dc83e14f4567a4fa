package rendezvous

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

func startTURNServer(t *testing.T, turn TURNConfig) (*Server, netip.AddrPort, key.Key) {
	t.Helper()
	priv, _ := key.NewPrivate()
	s := NewServer(Config{PrivateKey: priv, Relay: true, TURN: turn, Logger: slog.New(slog.DiscardHandler)})
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(c, netip.AddrPort{})
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c.LocalAddr().(*net.UDPAddr).AddrPort(), priv.Public()
}

// next returns the next message of type T, skipping others, or fails.
func next[T wire.Body](c *client) T {
	c.t.Helper()
	for {
		m := c.recv(2 * time.Second)
		if m == nil {
			var zero T
			c.t.Fatalf("no %T", zero)
		}
		if v, ok := m.(T); ok {
			return v
		}
	}
}

func TestTURNOfferAndRelayedAddresses(t *testing.T) {
	secret := []byte("lab-secret")
	uris := []string{"turn:203.0.113.20:3478", "turn:203.0.113.20:3478?transport=tcp"}
	s, srv, sk := startTURNServer(t, TURNConfig{URIs: uris, Secret: secret, TTL: time.Hour})
	a, b, stranger := newClient(t, srv, sk), newClient(t, srv, sk), newClient(t, srv, sk)

	// A registration brings an offer, for this peer, that a TURN server
	// with the secret accepts (coturn's REST scheme), valid for the TTL.
	a.register(b.pub())
	offer := next[*wire.TURNOffer](a)
	checkOffer(t, offer, secret, a.pub(), uris)
	if got := time.Until(time.Unix(int64(offer.Expires), 0)); got < 59*time.Minute || got > time.Hour+time.Second {
		t.Fatalf("credentials expire in %v, want an hour", got)
	}
	// A refresh soon after brings none: the offer has most of its life.
	a.register(b.pub())
	a.expectSilence()

	// An introduction brings each side fresh credentials of its own.
	b.register(a.pub())
	next[*wire.Intro](a)
	checkOffer(t, next[*wire.TURNOffer](a), secret, a.pub(), uris)
	checkOffer(t, next[*wire.TURNOffer](b), secret, b.pub(), uris)

	// A relayed address goes to the other peer of the pair, named as from
	// the sender.
	relayed := netip.MustParseAddrPort("203.0.113.20:49152")
	a.send(&wire.Relayed{Time: a.now(), Peer: b.pub(), Addr: relayed})
	got := next[*wire.Relayed](b)
	if got.Peer != a.pub() || got.Addr != relayed {
		t.Fatalf("b got %+v, want a's relayed address %v", got, relayed)
	}

	// A stranger's never reaches a peer that does not list it.
	stranger.register(a.pub())
	next[*wire.TURNOffer](stranger)
	before := s.Stats.DropNotMutual.Load()
	stranger.send(&wire.Relayed{Time: stranger.now(), Peer: a.pub(), Addr: relayed})
	a.expectSilence()
	if s.Stats.DropNotMutual.Load() != before+1 {
		t.Fatal("a stranger's relayed address was not counted as dropped")
	}
	if n := s.Stats.RelayedAddresses.Load(); n != 1 {
		t.Fatalf("RelayedAddresses = %d, want 1", n)
	}
}

func TestNoTURNNoOffer(t *testing.T) {
	s, srv, sk := startServer(t)
	a, b := newClient(t, srv, sk), newClient(t, srv, sk)
	a.register(b.pub())
	b.register(a.pub())
	next[*wire.Intro](a)
	a.send(&wire.Relayed{Time: a.now(), Peer: b.pub(), Addr: netip.MustParseAddrPort("203.0.113.20:49152")})
	for m := b.recv(300 * time.Millisecond); m != nil; m = b.recv(300 * time.Millisecond) {
		if m.Type() == wire.TypeTURNOffer || m.Type() == wire.TypeRelayed {
			t.Fatalf("a rendezvous without TURN sent %v", m.Type())
		}
	}
	if s.Stats.DropRelayOff.Load() != 1 {
		t.Fatal("a relayed address to a rendezvous without TURN was not counted as dropped")
	}
}

func checkOffer(t *testing.T, o *wire.TURNOffer, secret []byte, peer key.Key, uris []string) {
	t.Helper()
	ts, id, ok := strings.Cut(o.Username, ":")
	if !ok || ts != strconv.FormatUint(o.Expires, 10) || id == "" {
		t.Fatalf("username %q, want <expiry %d>:<peer>", o.Username, o.Expires)
	}
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(o.Username))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); o.Password != want {
		t.Fatalf("password %q, want %q", o.Password, want)
	}
	if strings.Join(o.URIs, " ") != strings.Join(uris, " ") {
		t.Fatalf("URIs %v, want %v", o.URIs, uris)
	}
	if u, _ := TURNCredentials(secret, peer, time.Unix(int64(o.Expires), 0)); u != o.Username {
		t.Fatalf("username %q is not the peer's (%q)", o.Username, u)
	}
}

func TestCheckTURNURI(t *testing.T) {
	for _, ok := range []string{"turn:relay1.example:3478", "turn:relay1.example", "turn:203.0.113.20:3478?transport=tcp", "turns:relay1.example:443"} {
		if err := CheckTURNURI(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"stun:relay1.example:3478", "relay1.example:3478", "turn:", "turn:host:99999", "turn:host?transport=sctp"} {
		if err := CheckTURNURI(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
