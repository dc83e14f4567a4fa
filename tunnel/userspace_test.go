package tunnel

import (
	"bytes"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/config"
	"github.com/punchtun/punchtun/tunnel/tundev"
	"github.com/punchtun/punchtun/tunnel/userspace"
)

// portUnreachable is an ICMP "port unreachable" from from to to about a
// UDP packet from to to about; checksums left out: the stack's device
// takes them for checked.
func portUnreachable(from, to, about netip.Addr) []byte {
	quoted := append([]byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0}, append(to.AsSlice(), about.AsSlice()...)...)
	quoted = append(quoted, 0x9c, 0x40, 0, 53, 0, 8, 0, 0)
	ip := append([]byte{0x45, 0, 0, byte(20 + 8 + len(quoted)), 0, 0, 0, 0, 64, 1, 0, 0}, append(from.AsSlice(), to.AsSlice()...)...)
	return append(append(ip, 3, 3, 0, 0, 0, 0, 0, 0), quoted...)
}

// TestUserspaceRoutesFollowPeers: the stack judges ICMP errors by the
// peers WireGuard has: the static peers of the config read last (a
// router on a peer's LAN speaks for it), and the members as the control
// plane adds and removes them through the wireGuard adapter.
func TestUserspaceRoutesFollowPeers(t *testing.T) {
	priv, _ := key.NewPrivate()
	b, _ := key.NewPrivate()
	parse := func(peers string) *config.Config { return testConfig(t, priv, peers) }
	cfg := parse("[Peer]\nPublicKey = " + b.Public().String() + "\nEndpoint = 127.0.0.1:51820\nAllowedIPs = 100.64.0.2/32, 192.168.5.0/24\n")
	u, err := openUserspace(slog.New(slog.DiscardHandler), cfg, UserspaceOptions{SOCKS5: config.Off}, 1280)
	if err != nil {
		t.Fatal(err)
	}
	defer u.stack.Device().Close()
	defer u.close()
	wg, bd := newTestWireGuard(t)
	wg.t.user = u

	self, peerB, router := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("192.168.5.1")
	member := netip.MustParseAddr("100.64.0.9")
	m, _ := key.NewPrivate()
	bd.PeerEndpoint(m.Public())
	refused := func(step string, from, about netip.Addr, want bool) {
		t.Helper()
		before := u.stack.ICMPRefused()
		u.stack.Device().Write([][]byte{portUnreachable(from, self, about)}, 0)
		if got := u.stack.ICMPRefused() > before; got != want {
			t.Errorf("%s: an error from %s about %s refused: %v, want %v", step, from, about, got, want)
		}
	}
	refused("static peer", router, peerB, false)
	refused("static peer", member, peerB, true)
	refused("member not yet known", member, member, true)
	if err := wg.AddMember(m.Public(), []netip.Prefix{netip.MustParsePrefix("100.64.0.9/32")}); err != nil {
		t.Fatal(err)
	}
	refused("member added", member, member, false)
	refused("member added", member, peerB, true)
	refused("member added", peerB, member, true)
	if err := wg.RemoveMember(m.Public()); err != nil {
		t.Fatal(err)
	}
	refused("member removed", member, member, true)
	u.routeStatic(parse("").Peers) // as Reload does
	refused("static peer removed", router, peerB, true)
	refused("static peer removed", peerB, peerB, true)
}

// TestUserspaceReadWoken: the userspace stack's device, as wireguard-go
// reads it through tundev, hands over an injected packet (a policy
// document gossiped in the tunnel) while the stack sends nothing: its
// blocked Read is woken (tundev.Waker), as a TUN's is by a read deadline.
func TestUserspaceReadWoken(t *testing.T) {
	s, err := userspace.NewStack([]netip.Addr{netip.MustParseAddr("100.64.0.2")}, 1280)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Device().(tundev.Waker); !ok {
		t.Fatal("the userspace device is no tundev.Waker")
	}
	d := tundev.New(s.Device(), func(d tun.Device) tun.Device { return d }, nil)
	defer d.Close()
	got := make(chan []byte, 1)
	go func() {
		bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
		if n, err := d.Read(bufs, sizes, 0); err == nil && n > 0 {
			got <- bufs[0][:sizes[0]]
		}
	}()
	pkt := []byte{0x45, 0, 0, 20, 0, 7, 0, 0, 64, 17, 0, 0, 100, 64, 0, 2, 100, 64, 0, 9}
	d.Inject(pkt)
	select {
	case p := <-got:
		if !bytes.Equal(p, pkt) {
			t.Fatalf("read % x, want the injected % x", p, pkt)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the injected packet was not read within 2 s: the blocked read was not woken")
	}
}
