package userspace_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
)

// A pair that cannot reach each other directly meets on the rendezvous's
// relay.
//
// Each peer sits behind a NAT of the test's own (restrictedNAT): a UDP
// forwarder that the peer reaches the rendezvous through, as its
// Rendezvous address. The rendezvous sees the peer at the NAT's outside
// socket, introduces the pair with those as their endpoints, and the
// peers punch them; but the NAT lets in only what comes from the
// rendezvous, as a port-restricted cone NAT does for a host that has sent
// to nobody else, so every probe is dropped and no direct path forms.
// Real NATs in namespaces would need root (the lab has them); this needs
// nothing but loopback.
//
// Both peers share this host, so its own addresses would give them a
// path around the NATs; `LocalCandidates = false` keeps them from
// offering those, as two hosts on different LANs would have none to
// offer each other. PortMapping is off: no router is asked.
//
// The pair cannot then be let go direct by opening the NAT: a forwarder
// in userspace hands the peer what it lets in from its own address, not
// from the sender's (only a real NAT rewrites addresses both ways), and
// the peer's own packets to the other do not go through it. Going from
// the relay to a direct path is the lab's (TestPathChangeKeepsTCP).

// restrictedNAT forwards between a peer (on inside, which the peer takes
// for the rendezvous) and the rendezvous (from outside, the peer's public
// endpoint), and drops what reaches outside from anyone else.
type restrictedNAT struct {
	inside, outside *net.UDPConn
	server          netip.AddrPort
	peer            atomic.Pointer[netip.AddrPort] // where the peer last sent from
	// withhold: the peer's Publish messages are dropped, as a rendezvous
	// that withholds what members publish would; withheld counts them.
	withhold atomic.Bool
	withheld atomic.Int64
	// Bytes forwarded each way, and packets from others dropped.
	out, in, dropped atomic.Int64
	wg               sync.WaitGroup
}

// newRestrictedNAT starts a NAT in front of the rendezvous at server; its
// outside address is on loopback address public where this host allows
// binding it (Linux does; 127.0.0.1 elsewhere), so that the two NATs of a
// pair have public addresses of their own.
func newRestrictedNAT(t *testing.T, server, public string) *restrictedNAT {
	t.Helper()
	n := &restrictedNAT{server: netip.MustParseAddrPort(server)}
	var err error
	if n.inside, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
		t.Fatal(err)
	}
	if n.outside, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(public), 0))); err != nil {
		if n.outside, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0"))); err != nil {
			t.Fatal(err)
		}
	}
	n.wg.Add(2)
	go n.pump(n.inside, n.outside, n.toServer, &n.out)
	go n.pump(n.outside, n.inside, n.toPeer, &n.in)
	t.Cleanup(func() {
		n.inside.Close()
		n.outside.Close()
		n.wg.Wait()
	})
	return n
}

// Rendezvous is the address the peer is to take for the rendezvous's.
func (n *restrictedNAT) Rendezvous() string { return n.inside.LocalAddr().String() }

// Public is the peer's endpoint as the rendezvous sees it.
func (n *restrictedNAT) Public() string { return n.outside.LocalAddr().String() }

// pump sends each packet from reads to where dst says, from to, counting
// its bytes in sent; a packet dst has no destination for is dropped.
func (n *restrictedNAT) pump(from, to *net.UDPConn, dst func(src netip.AddrPort, pkt []byte) (netip.AddrPort, bool), sent *atomic.Int64) {
	defer n.wg.Done()
	buf := make([]byte, 65536)
	for {
		size, src, err := from.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		d, ok := dst(src, buf[:size])
		if !ok {
			continue
		}
		if _, err := to.WriteToUDPAddrPort(buf[:size], d); err == nil {
			sent.Add(int64(size))
		}
	}
}

// toServer takes the peer's packets out to the rendezvous, but a Publish
// while withholding.
func (n *restrictedNAT) toServer(src netip.AddrPort, pkt []byte) (netip.AddrPort, bool) {
	n.peer.Store(&src)
	if h, err := wire.ParseHeader(pkt); err == nil && h.Type == wire.TypePublish && n.withhold.Load() {
		n.withheld.Add(1)
		return netip.AddrPort{}, false
	}
	return n.server, true
}

// toPeer lets in the rendezvous's packets, to the peer, and no one else's.
func (n *restrictedNAT) toPeer(src netip.AddrPort, _ []byte) (netip.AddrPort, bool) {
	peer := n.peer.Load()
	if src != n.server || peer == nil {
		n.dropped.Add(1)
		return netip.AddrPort{}, false
	}
	return *peer, true
}

func TestRootlessRelay(t *testing.T) {
	h := newHarness(t)
	alicePriv, alicePub := h.genkey()
	bobPriv, bobPub := h.genkey()
	echo := echoServer(t)
	aliceNAT := newRestrictedNAT(t, h.rdvAddr, "127.0.0.2")
	bobNAT := newRestrictedNAT(t, h.rdvAddr, "127.0.0.3")
	behind := "LocalCandidates = false\nPortMapping = off\n"
	alice := h.up("alice", h.peerConfigVia(aliceNAT.Rendezvous(), alicePriv, behind+fmt.Sprintf("Address = 100.64.0.1/24\nForward = tcp:7=127.0.0.1:%d\n"+
		"[Peer]\nName = bob\nPublicKey = %s\nAllowedIPs = 100.64.0.2/32\n", echo, bobPub)))
	bob := h.up("bob", h.peerConfigVia(bobNAT.Rendezvous(), bobPriv, behind+fmt.Sprintf("Address = 100.64.0.2/24\nForward = tcp:7=127.0.0.1:%d\n"+
		"[Peer]\nName = alice\nPublicKey = %s\nAllowedIPs = 100.64.0.1/32\n", echo, alicePub)))
	alice.waitPath("bob", "relay", 20*time.Second)
	bob.waitPath("alice", "relay", 20*time.Second)
	t.Logf("alice is %s and bob %s to the rendezvous", aliceNAT.Public(), bobNAT.Public())

	// 1 MiB each way, both ways round, intact.
	echoed(t, socksDial(t, alice, "100.64.0.2:7"), 1<<20)
	echoed(t, socksDial(t, bob, "100.64.0.1:7"), 1<<20)

	// Still relayed, through the rendezvous each reaches through its NAT,
	// and never direct: the direct path was tried and blocked.
	for _, c := range []struct {
		p     *peer
		other string
		nat   *restrictedNAT
	}{{alice, "bob", aliceNAT}, {bob, "alice", bobNAT}} {
		st, err := c.p.status()
		if err != nil {
			t.Fatal(err)
		}
		for _, ps := range st.Peers {
			if ps.Name != c.other {
				continue
			}
			if ps.Path != "relay" || ps.Via != c.nat.Rendezvous() {
				t.Errorf("%s's path to %s: %s via %q; want relay via %s", c.p.iface, c.other, ps.Path, ps.Via, c.nat.Rendezvous())
			}
			for _, ch := range ps.History {
				if ch.To != "relay" && ch.To != "connecting" {
					t.Errorf("%s went %s to %s: %s", c.p.iface, ch.To, c.other, ch.Why)
				}
			}
		}
		// Each peer's 2 MiB of echoes passed its NAT both ways: they went
		// through the rendezvous, the only one the NAT lets in.
		if out, in := c.nat.out.Load(), c.nat.in.Load(); out < 2<<20 || in < 2<<20 {
			t.Errorf("%s's NAT forwarded %d bytes out and %d in; want 2 MiB each way at least", c.p.iface, out, in)
		}
		if c.nat.dropped.Load() == 0 {
			t.Errorf("%s's NAT dropped nothing: the peer's probes never came", c.p.iface)
		}
		t.Logf("%s's NAT: %d bytes out, %d in, %d packets from others dropped", c.p.iface, c.nat.out.Load(), c.nat.in.Load(), c.nat.dropped.Load())
	}
}
