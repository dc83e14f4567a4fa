package tunnel

import (
	"encoding/hex"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/bind"
	"github.com/punchtun/punchtun/tunnel/link"
)

// newTestWireGuard is the wireGuard adapter on a device with a channel
// TUN (no root), so that what it asks of WireGuard really runs.
func newTestWireGuard(t *testing.T) (wireGuard, *bind.Bind) {
	t.Helper()
	own, _ := key.NewPrivate()
	bd := bind.New(own.Public(), link.Discard)
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), bd, device.NewLogger(device.LogLevelSilent, ""))
	t.Cleanup(dev.Close)
	if err := dev.IpcSet("private_key=" + hex.EncodeToString(own[:]) + "\n"); err != nil {
		t.Fatal(err)
	}
	return wireGuard{&Tunnel{dev: dev, bind: bd}}, bd
}

// TestWireGuardErrorsReported: what WireGuard refuses reaches the control
// plane, which says what failed.
func TestWireGuardErrorsReported(t *testing.T) {
	wg, bd := newTestWireGuard(t)
	p, _ := key.NewPrivate()
	peer := p.Public()
	// No PeerEndpoint in the Bind: WireGuard cannot parse the endpoint.
	if err := wg.Repoint(peer); err == nil {
		t.Error("Repoint to a peer the Bind does not know succeeded")
	}
	bd.PeerEndpoint(peer)
	if err := wg.AddMember(peer, []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}); err != nil {
		t.Fatal(err)
	}
	if err := wg.Repoint(peer); err != nil {
		t.Errorf("Repoint: %v", err)
	}
	if err := wg.RemoveMember(peer); err != nil {
		t.Errorf("RemoveMember: %v", err)
	}
	// A closed device takes nothing.
	wg.t.dev.Close()
	if err := wg.RemoveMember(peer); err == nil {
		t.Error("RemoveMember on a closed device succeeded")
	}
}
