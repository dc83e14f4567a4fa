package rendezvous

import (
	"net/netip"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

func newNetwork(t *testing.T) cert.NetworkPrivate {
	t.Helper()
	k, err := cert.NewNetworkPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// certFor signs a certificate of network nk for member, valid from
// notBefore for d.
func certFor(t *testing.T, nk cert.NetworkPrivate, member key.Key, name, addr string, notBefore time.Time, d time.Duration) []byte {
	t.Helper()
	c, err := cert.Sign(nk, cert.Template{Member: member, Name: name, Addresses: []netip.Prefix{netip.MustParsePrefix(addr)},
		NotBefore: notBefore, NotAfter: notBefore.Add(d)})
	if err != nil {
		t.Fatal(err)
	}
	return c.Bytes()
}

// registerMember registers c with a certificate and returns what the
// server sent after the ack: nil, or a Refused.
func (c *client) registerMember(certificate []byte) *wire.Refused {
	c.t.Helper()
	network := [32]byte{}
	if parsed, err := cert.Parse(certificate); err == nil {
		network = parsed.Network
	} else if len(certificate) > 33 {
		copy(network[:], certificate[1:33]) // as it names it, for a forged one
	}
	c.registerIn(network, certificate)
	return c.refusal()
}

// registerIn registers c as a member of network with certificate.
func (c *client) registerIn(network [32]byte, certificate []byte) {
	c.t.Helper()
	c.send(&wire.Register{Time: c.now(), Candidates: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.2:51820")}, Network: network, Cert: certificate})
}

// refusal reads the ack of a registration and returns the Refused that
// follows it, if any.
func (c *client) refusal() *wire.Refused {
	c.t.Helper()
	if _, ok := c.recv(2 * time.Second).(*wire.RegisterAck); !ok {
		c.t.Fatal("no register ack")
	}
	if r, ok := c.recv(200 * time.Millisecond).(*wire.Refused); ok {
		return r
	}
	return nil
}

// expectMemberIntro reads until an Intro of peer arrives and checks that it
// carries want as the certificate.
func (c *client) expectMemberIntro(peer key.Key, want []byte) {
	c.t.Helper()
	if in := c.nextIntro(peer); in.Peer != peer || string(in.Cert) != string(want) {
		c.t.Fatalf("intro of %v (cert %d bytes), want %v with its certificate", in.Peer, len(in.Cert), peer)
	}
}

func TestMembersLookUpEachOther(t *testing.T) {
	s, addr, pub := startServer(t)
	nk := newNetwork(t)
	a, b, stranger := newClient(t, addr, pub), newClient(t, addr, pub), newClient(t, addr, pub)
	now := time.Now()
	ca := certFor(t, nk, a.pub(), "m1", "100.64.0.1/24", now, time.Hour)
	cb := certFor(t, nk, b.pub(), "m2", "100.64.0.2/24", now, time.Hour)
	if r := a.registerMember(ca); r != nil {
		t.Fatalf("a refused: %v", cert.Reason(r.Reason))
	}
	if r := b.registerMember(cb); r != nil {
		t.Fatalf("b refused: %v", cert.Reason(r.Reason))
	}
	if m, n := s.Members(); m != 2 || n != 1 {
		t.Fatalf("%d members in %d networks, want 2 in 1", m, n)
	}

	// By address, then by name: both sides are introduced, each with the
	// other's certificate.
	a.send(&wire.Lookup{Time: a.now(), Addr: netip.MustParseAddr("100.64.0.2")})
	a.expectMemberIntro(b.pub(), cb)
	b.expectMemberIntro(a.pub(), ca)
	b.send(&wire.Lookup{Time: b.now(), Name: "m1"})
	b.expectMemberIntro(a.pub(), ca)
	a.expectMemberIntro(b.pub(), cb)

	// Nobody holds it: a miss, echoing the query.
	a.send(&wire.Lookup{Time: a.now(), Addr: netip.MustParseAddr("100.64.0.9")})
	if miss, ok := a.recv(2 * time.Second).(*wire.LookupMiss); !ok || miss.Addr != netip.MustParseAddr("100.64.0.9") {
		t.Fatalf("want a miss for 100.64.0.9, got %+v", miss)
	}

	// A peer without a network learns nothing: no lookup, no query.
	stranger.register()
	stranger.send(&wire.Lookup{Time: stranger.now(), Name: "m1"})
	stranger.send(&wire.Query{Time: stranger.now(), Peer: a.pub()})
	stranger.expectSilence()
	a.expectSilence()

	// Members query and relay for each other as mutual peers do.
	a.send(&wire.Query{Time: a.now(), Peer: b.pub()})
	a.expectMemberIntro(b.pub(), cb)

	// b moves: a, introduced to it before, hears of it at once.
	b2 := newClient(t, addr, pub)
	b2.priv, b2.shared = b.priv, b.shared
	b2.clock = b.clock
	if r := b2.registerMember(cb); r != nil {
		t.Fatalf("b refused after moving: %v", cert.Reason(r.Reason))
	}
	a.expectMemberIntro(b.pub(), cb)

	// Leaving takes the name and address with it.
	b2.send(&wire.Deregister{Time: b2.now()})
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m, _ := s.Members(); m == 1 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("%d members after the deregistration, want 1", m)
		}
	}
	a.send(&wire.Lookup{Time: a.now(), Name: "m2"})
	if _, ok := a.recv(2 * time.Second).(*wire.LookupMiss); !ok {
		t.Fatal("want a miss for the member that left")
	}
}

func TestMembersRefused(t *testing.T) {
	s, addr, pub := startServer(t)
	nk, other := newNetwork(t), newNetwork(t)
	now := time.Now()
	first := newClient(t, addr, pub)
	if r := first.registerMember(certFor(t, nk, first.pub(), "m1", "100.64.0.1/24", now, time.Hour)); r != nil {
		t.Fatalf("refused: %v", cert.Reason(r.Reason))
	}
	for _, tc := range []struct {
		name string
		cert func(c *client) []byte
		want cert.Reason
	}{
		{"expired", func(c *client) []byte {
			return certFor(t, nk, c.pub(), "m2", "100.64.0.2/24", now.Add(-2*time.Hour), time.Hour)
		}, cert.Expired},
		{"not yet valid", func(c *client) []byte {
			return certFor(t, nk, c.pub(), "m2", "100.64.0.2/24", now.Add(time.Hour), time.Hour)
		}, cert.NotYetValid},
		{"another member's key", func(c *client) []byte { return certFor(t, nk, first.pub(), "m2", "100.64.0.2/24", now, time.Hour) }, cert.KeyMismatch},
		{"another member's address", func(c *client) []byte { return certFor(t, nk, c.pub(), "m2", "100.64.0.1/24", now, time.Hour) }, cert.Overlap},
		{"another member's name", func(c *client) []byte { return certFor(t, nk, c.pub(), "m1", "100.64.0.2/24", now, time.Hour) }, cert.Overlap},
		{"forged", func(c *client) []byte {
			b := certFor(t, nk, c.pub(), "m2", "100.64.0.2/24", now, time.Hour)
			b[len(b)-1] ^= 1
			return b
		}, cert.BadSignature},
		{"not a certificate", func(c *client) []byte { return []byte{1, 2, 3} }, cert.Malformed},
	} {
		c := newClient(t, addr, pub)
		r := c.registerMember(tc.cert(c))
		if r == nil || cert.Reason(r.Reason) != tc.want {
			t.Errorf("%s: refused %v, want %v", tc.name, r, tc.want)
			continue
		}
		// Refused as a member, it is no member: it looks nobody up.
		c.send(&wire.Lookup{Time: c.now(), Name: "m1"})
		c.expectSilence()
		if got := s.Stats.Refused[tc.want].Load(); got == 0 {
			t.Errorf("%s: not counted", tc.name)
		}
	}
	// A certificate of another network than the one it registers for.
	liar := newClient(t, addr, pub)
	liar.registerIn(nk.Public(), certFor(t, other, liar.pub(), "m9", "100.64.0.9/24", now, time.Hour))
	if r := liar.refusal(); r == nil || cert.Reason(r.Reason) != cert.OtherNetwork {
		t.Errorf("another network's certificate: refused %+v, want other-network", r)
	}
	// Another network's members do not meet the first's.
	o := newClient(t, addr, pub)
	if r := o.registerMember(certFor(t, other, o.pub(), "m2", "100.64.0.2/24", now, time.Hour)); r != nil {
		t.Fatalf("refused: %v", cert.Reason(r.Reason))
	}
	o.send(&wire.Lookup{Time: o.now(), Name: "m1"})
	if _, ok := o.recv(2 * time.Second).(*wire.LookupMiss); !ok {
		t.Fatal("a member of another network found m1")
	}
	first.send(&wire.Query{Time: first.now(), Peer: o.pub()})
	first.expectSilence()
	if m, n := s.Members(); m != 2 || n != 2 {
		t.Fatalf("%d members in %d networks, want 2 in 2", m, n)
	}
}

func TestNetworksAllowList(t *testing.T) {
	nk, other := newNetwork(t), newNetwork(t)
	_, addr, pub := startServerWith(t, Config{Networks: []cert.NetworkKey{nk.Public()}})
	now := time.Now()
	in, out := newClient(t, addr, pub), newClient(t, addr, pub)
	if r := in.registerMember(certFor(t, nk, in.pub(), "m1", "100.64.0.1/24", now, time.Hour)); r != nil {
		t.Fatalf("allowed network refused: %v", cert.Reason(r.Reason))
	}
	if r := out.registerMember(certFor(t, other, out.pub(), "m1", "100.64.0.1/24", now, time.Hour)); r == nil || cert.Reason(r.Reason) != cert.OtherNetwork {
		t.Fatalf("network not on the list: %+v", r)
	}
}
