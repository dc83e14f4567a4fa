package tunnel

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// mtuTUN is a channel TUN with the MTU of its choosing.
type mtuTUN struct {
	tun.Device
	mtu int
}

func (t mtuTUN) MTU() (int, error) { return t.mtu, nil }

// sizeBind records the sizes of the WireGuard transport messages sent.
type sizeBind struct {
	conn.Bind
	mu    sync.Mutex
	sizes []int
}

func (b *sizeBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.mu.Lock()
	for _, p := range bufs {
		if p[0] == 4 && len(p) > 32 { // transport data, not a keepalive
			b.sizes = append(b.sizes, len(p))
		}
	}
	b.mu.Unlock()
	return b.Bind.Send(bufs, ep)
}

// TestWireGuardPadsToInterfaceMTU: what control's route MTUs rely on
// (control's innerMTU): WireGuard pads a packet to a multiple of 16 bytes
// up to the interface's MTU, whatever the route's. On an interface of
// 1280, a 1240-byte packet (path − 60 on a 1300-byte path) leaves as 1248
// and overflows the path by 8 bytes; 1232, a multiple of 16, leaves as is.
func TestWireGuardPadsToInterfaceMTU(t *testing.T) {
	binds := bindtest.NewChannelBinds()
	rec := &sizeBind{Bind: binds[0]}
	privs := [2]key.Private{}
	for i := range privs {
		privs[i], _ = key.NewPrivate()
	}
	tuns := [2]*tuntest.ChannelTUN{tuntest.NewChannelTUN(), tuntest.NewChannelTUN()}
	devs := [2]*device.Device{
		device.NewDevice(mtuTUN{tuns[0].TUN(), 1280}, rec, device.NewLogger(device.LogLevelSilent, "")),
		device.NewDevice(tuns[1].TUN(), binds[1], device.NewLogger(device.LogLevelSilent, "")),
	}
	for i, dev := range devs {
		t.Cleanup(dev.Close)
		peer := privs[i^1].Public()
		cfg := fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nallowed_ip=10.9.0.%d/32\nendpoint=127.0.0.1:%d\n",
			hex.EncodeToString(privs[i][:]), hex.EncodeToString(peer[:]), 2-i, 1+i)
		if err := dev.IpcSet(cfg); err != nil {
			t.Fatal(err)
		}
		if err := dev.Up(); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) }) // runs before the devices close
	// The peer's TUN takes what arrives.
	go func() {
		for {
			select {
			case <-tuns[1].Inbound:
			case <-done:
				return
			}
		}
	}()
	for _, tc := range []struct{ size, sealed int }{{1232, 1232 + 32}, {1240, 1248 + 32}} {
		pkt := make([]byte, tc.size)
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(tc.size))
		copy(pkt[12:16], []byte{10, 9, 0, 1})
		copy(pkt[16:20], []byte{10, 9, 0, 2})
		tuns[0].Outbound <- pkt
		var got int
		eventually := time.Now().Add(5 * time.Second)
		for got == 0 && time.Now().Before(eventually) {
			rec.mu.Lock()
			if n := len(rec.sizes); n > 0 {
				got, rec.sizes = rec.sizes[n-1], nil
			}
			rec.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
		if got != tc.sealed {
			t.Errorf("a %d-byte packet on an interface of 1280 left as %d bytes, want %d", tc.size, got, tc.sealed)
		}
	}
}
