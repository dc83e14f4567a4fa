//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel"
)

// TestPortMappingConflict: two hosts behind one miniupnpd router, both on
// WireGuard's usual ListenPort 51820, as two machines on one LAN often
// are. Each mode: the second asks for the port the first holds, and
// still ends with a forward of its own on another external port (UPnP's
// AddPortMapping refuses a taken port with 718; NAT-PMP and PCP routers
// pick another port themselves), and each is reached directly, through
// its forward, by a peer behind another hard NAT.
func TestPortMappingConflict(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptpc", "hard", "hard")
	rvKey := l.startRendezvous()
	for i, mode := range []string{"natpmp", "pcp", "upnp", "upnp-igdv1", "auto"} {
		t.Run(mode, func(t *testing.T) {
			l := *l
			l.t, l.dir = t, t.TempDir()
			protos, want := []string{mode}, mode
			conf := ""
			switch mode {
			case "auto":
				protos, want = []string{"natpmp", "pcp", "upnp"}, ""
			case "upnp-igdv1":
				// IGDv1 has no AddAnyPortMapping: the client picks the port.
				protos, want, mode = []string{"upnp"}, "upnp", "upnp"
				conf = "force_igd_desc_v1=yes\n"
			}
			router := l.startMiniupnpdConf("nata", conf+routerConf(protos, false))
			defer router.proc.stop()
			externals := map[uint16]string{}
			for j, host := range []string{"a1", "a2"} {
				a, b := l.sameLANPair(i, j, mode, rvKey)
				start := time.Now()
				st := l.waitMapping(a, want, 10*time.Second)
				ext, err := netip.ParseAddrPort(st.PortMapping.External)
				if err != nil || ext.Addr() != netip.MustParseAddr("203.0.113.21") {
					t.Fatalf("%s: mapping %+v", host, st.PortMapping)
				}
				if other, taken := externals[ext.Port()]; taken {
					t.Fatalf("%s and %s were both given external port %d", other, host, ext.Port())
				}
				externals[ext.Port()] = host
				if err := router.forwardsTo(int(ext.Port()), lanAddrs[j], 51820); err != nil {
					t.Fatalf("%s: %v", host, err)
				}
				l.waitPath(a, "direct")
				// The far peer reaches a through its forward: a hard NAT's
				// own mapping of a's socket would be another port.
				if ps := l.waitPath(b, "direct"); ps.Endpoint != ext.String() {
					t.Errorf("%s's peer reaches it at %s, want its forward %s", host, ps.Endpoint, ext)
				}
				t.Logf("%s (ListenPort 51820) mapped over %s to %s, %.2f s after it was up", host, st.PortMapping.Protocol, ext, time.Since(start).Seconds())
				l.ping(a, b)
				l.ping(b, a)
			}
		})
	}
	// A router whose rules permit one external port to the LAN refuses the
	// second host for good: UPnP's AddPortMapping answers 718 (taken), and
	// AddAnyPortMapping, finding no other port it may give, 728. Status
	// shows that code, and the second pair is relayed as without mapping.
	// (miniupnpd 2.3.9's NAT-PMP and PCP instead try all 64k ports against
	// the rules before they answer, over a minute: no answer in time.)
	t.Run("refused", func(t *testing.T) {
		l := *l
		l.t, l.dir = t, t.TempDir()
		conf := strings.Replace(routerConf([]string{"upnp"}, false), "allow 1024-65535 192.168.1.0/24 1024-65535", "allow 51820 192.168.1.0/24 51820", 1)
		router := l.startMiniupnpdConf("nata", conf)
		defer router.proc.stop()
		a1, _ := l.sameLANPair(9, 0, "upnp", rvKey)
		l.waitMapping(a1, "upnp", 10*time.Second)
		a2, b2 := l.sameLANPair(9, 1, "upnp", rvKey)
		const want = "upnp: router refused: result code 728 (no port maps available)"
		var pm tunnel.PortMappingStatus
		eventually(t, 10*time.Second, "the router's refusal in status", func() error {
			st, err := l.status(a2)
			if err != nil {
				return err
			}
			if pm = st.PortMapping; pm.Offered || pm.Reason != want || pm.Outcomes["upnp"]["refused"] == 0 {
				return fmt.Errorf("port mapping %+v", pm)
			}
			return nil
		})
		t.Logf("the second host on the LAN: %s", pm.Reason)
		l.waitPath(a2, "relay")
		l.ping(a2, b2)
		l.waitPath(a1, "direct")
	})
}

// lanAddrs are a1's and a2's addresses on nata's LAN.
var lanAddrs = []string{"192.168.1.2", "192.168.1.3"}

// sameLANPair starts the j-th host behind nata (a1, a2) with ListenPort
// 51820 and PortMapping = mode, and a peer for it on b1, behind the
// other hard NAT; each pair has its own tunnel subnet.
func (l *lab) sameLANPair(i, j int, mode string, rvKey key.Private) (a, b *peerSpec) {
	l.t.Helper()
	host := []string{"a1", "a2"}[j]
	a = newPeer(l.t, host, fmt.Sprintf("ptpc%s%d", host, i), fmt.Sprintf("100.64.%d.1", j))
	b = newPeer(l.t, "b1", fmt.Sprintf("ptpcb%d%d", j, i), fmt.Sprintf("100.64.%d.2", j))
	a.port = 51820
	l.upMapped(a, b, rvKey, mode)
	l.upMapped(b, a, rvKey, "off")
	return a, b
}
