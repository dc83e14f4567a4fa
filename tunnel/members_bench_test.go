package tunnel

import (
	"encoding/hex"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/bind"
	"github.com/punchtun/punchtun/tunnel/link"
)

// BenchmarkMemberMemory measures what one member costs a peer: a
// wireguard-go peer (its queues and timers) and its endpoint in the data
// path, added as AddMember adds them, on a device with a channel TUN (no
// root). It reports the heap in use per member; `go test -run X -bench
// MemberMemory ./tunnel` prints it. The control plane's own state per
// member (a nat.Punch, a certificate, the path history) is a few KiB more.
func BenchmarkMemberMemory(b *testing.B) {
	const members = 1000
	for range b.N {
		own, _ := key.NewPrivate()
		bd := bind.New(own.Public(), link.Discard)
		dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), bd, device.NewLogger(device.LogLevelSilent, ""))
		if err := dev.IpcSet("private_key=" + hex.EncodeToString(own[:]) + "\n"); err != nil {
			b.Fatal(err)
		}
		if err := dev.Up(); err != nil {
			b.Fatal(err)
		}
		before := heapInUse()
		for i := range members {
			p, _ := key.NewPrivate()
			k := p.Public()
			bd.PeerEndpoint(k) // as the control plane's newPeer does
			var s strings.Builder
			fmt.Fprintf(&s, "public_key=%s\nendpoint=%s%s\nreplace_allowed_ips=true\nallowed_ip=100.64.%d.%d/32\n",
				hex.EncodeToString(k[:]), bind.EndpointPrefix, k, i>>8, i&255)
			if err := dev.IpcSet(s.String()); err != nil {
				b.Fatal(err)
			}
		}
		after := heapInUse()
		b.ReportMetric(float64(int64(after)-int64(before))/members, "heap-bytes/member")
		dev.Close()
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC() // twice: sync.Pools keep buffers through one
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
