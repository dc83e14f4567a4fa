//go:build linux

package main

import (
	"fmt"
	"testing"
	"time"
)

// TestSmallPathMTU shrinks the internet path under both NAT routers (their
// WAN links) below what WireGuard's packets need at punchtun's default MTU
// of 1280 — 1340 bytes over IPv4, 1360 over IPv6 — as PPPoE, DS-Lite,
// mobile networks and VPN-in-VPN do. The routers answer with ICMP
// fragmentation-needed (Packet Too Big), as real ones do. With no
// configuration, TCP through the tunnel must carry 10 MiB intact, on the
// direct path, and status must show the path MTU. Before, wireguard-go's
// GSO batches were refused whole (EMSGSIZE) once the kernel had learned
// the smaller path MTU, and TCP stalled for good.
func TestSmallPathMTU(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, prefix string
		mtu          int
		natA, natB   string
		ipv6         bool
	}{
		{"ipv4-1300", "ptmtu4a", 1300, "easy", "easy", false},
		{"ipv4-1200", "ptmtu4b", 1200, "easy", "easy", false},
		{"ipv6-1280", "ptmtu6", 1280, "hard", "hard", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var opts []string
			if tc.ipv6 {
				opts = append(opts, "ipv6")
			}
			l := newLab(t, tc.prefix, tc.natA, tc.natB, opts...)
			for _, router := range []string{"nata", "natb"} {
				l.run(router, "ip", "link", "set", "wan", "mtu", fmt.Sprint(tc.mtu))
				l.run("inet", "ip", "link", "set", l.prefix+"-"+router, "mtu", fmt.Sprint(tc.mtu))
			}
			rv := l.newRendezvous("rendezvous", rendezvousAddr, []string{rendezvousAddr, rendezvousAddr2}, "")
			a, b, _, _ := l.pair(tc.prefix+"a0", "a1", tc.prefix+"b0", "b1", "direct", rv)
			quiet(t, func() { // the time taken is a figure
				start := time.Now()
				l.transfer(a, b)
				l.transfer(b, a)
				t.Logf("20 MiB over TCP through a %d-byte path in %.2f s", tc.mtu, time.Since(start).Seconds())
			})
			// Once a packet too big for the path has left each side, each
			// side's status shows the path MTU. (TCP alone may never send
			// one: the receiver's MSS already fits.) Pings of 1278 bytes
			// that may be fragmented: the first is lost to the ICMP.
			for _, p := range []struct{ from, to *peerSpec }{{a, b}, {b, a}} {
				l.run(p.from.host, "ping", "-M", "dont", "-s", "1250", "-c", "4", "-i", "0.3", "-W", "1", p.to.addr)
				eventually(t, 10*time.Second, p.from.iface+" path MTU in status", func() error {
					st, err := l.status(p.from)
					if err != nil {
						return err
					}
					if got := st.Peers[0].PathMTU; got != tc.mtu {
						return fmt.Errorf("status path_mtu %d, want %d", got, tc.mtu)
					}
					return nil
				})
			}
		})
	}
}
