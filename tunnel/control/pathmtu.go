package control

import (
	"cmp"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/link"
)

// Path MTU. punchtun's default MTU, 1280, makes WireGuard packets of 1340
// bytes over IPv4 (1360 over IPv6), and many paths are smaller: PPPoE,
// DS-Lite, mobile networks, a VPN inside another. A router on such a path
// answers with ICMP fragmentation-needed (Packet Too Big), and the kernel
// remembers the smaller path MTU for that destination; from then on it
// refuses wireguard-go's UDP GSO batches whole (EMSGSIZE), since their
// segments no longer fit, while a single datagram it fragments. Plain
// wireguard-go drops those batches, and TCP inside the tunnel stalls for
// good.
//
// punchtun does two things. The data path sends a refused batch again one
// datagram at a time, which the kernel fragments, so nothing is lost; and
// it tells the control plane, which looks the path MTU up and lowers the
// MTU of the routes to that peer's AllowedIPs to what fits. Senders on
// this host then size their packets to fit at once (TCP picks the new MSS
// on its next segment), and a router forwarding into the tunnel answers
// bigger packets with ICMP, as any router would: no more fragments, and
// GSO batches again. status shows the path MTU.

// wireGuardOverhead is what WireGuard adds to a packet: its 16-byte
// transport header and 16-byte authentication tag.
const wireGuardOverhead = 32

// minIPv4MTU is the least MTU every IPv4 host must take.
const minIPv4MTU = 576

// mtuCheckInterval spaces the path MTU look-ups of a tunnel in use. A
// batch refused as too big asks at once; this catches what fits a
// datagram at a time, which the kernel fragments without a word (IPv6
// here, and birthday sockets).
const mtuCheckInterval = 5 * time.Second

// wireGuardPadding: WireGuard pads each packet to a multiple of this
// before sealing it, up to the interface's MTU — not the route's. With
// routes below the interface's MTU, a packet of the route MTU would grow
// by up to 15 bytes past what the path takes: a 1240-byte route MTU on a
// 1300-byte path made 1308-byte datagrams, every one refused as a UDP GSO
// batch and fragmented (a tenth of the speed of MTU = 1240 set by hand).
const wireGuardPadding = 16

// innerMTU is the largest packet the tunnel carries whole over a path of
// pathMTU bytes to dst, through a relay if relayed, before WireGuard's
// padding.
func innerMTU(pathMTU int, dst netip.Addr, relayed bool) int {
	ipHeader := 20
	if dst.Is6() && !dst.Is4In6() {
		ipHeader = 40
	}
	n := pathMTU - ipHeader - 8 - wireGuardOverhead
	if relayed {
		n -= wire.RelayHeaderLen
	}
	return n
}

// fittingRouteMTU is the MTU for the routes to a peer over a path that carries
// packets of inner bytes whole, through an interface of ifaceMTU; 0 when
// the interface's fits. Below the interface's MTU, WireGuard's padding
// must fit too: a multiple of wireGuardPadding.
func fittingRouteMTU(inner, ifaceMTU int) int {
	if inner >= ifaceMTU {
		return 0 // padded at most to the interface's MTU, which fits
	}
	return max(inner-inner%wireGuardPadding, minIPv4MTU)
}

// fitPathMTU fits p's routes to mtu, the path MTU of r, p's route (0:
// none known below the links').
func (p *peer) fitPathMTU(mtu int, r link.Route) {
	d := p.deps
	fit := 0
	if mtu > 0 {
		fit = fittingRouteMTU(innerMTU(mtu, r.Dst.Addr(), r.Relayed()), d.ifaceMTU)
	}
	if p.mtu.path != mtu {
		d.log.Info("path MTU", "peer", p.label(), "endpoint", r.Dst, "path_mtu", mtu, "tunnel_mtu", cmp.Or(fit, d.ifaceMTU))
		p.mtu.path = mtu
	}
	if p.mtu.route != fit {
		p.mtu.route = fit
		if err := d.wg.SetPeerMTU(p.key, fit); err != nil {
			d.log.Warn("cannot set the MTU of the routes to a peer", "peer", p.label(), "mtu", fit, "err", err)
		}
	}
}

// tickPathMTU queues a path MTU check for p while its tunnel is in use.
func (p *peer) tickPathMTU(now time.Time) {
	r := p.ep.Route()
	if !r.Dst.IsValid() || now.Before(p.mtu.nextCheck) || now.Sub(p.ep.Activity().Data) > activeWindow {
		return
	}
	p.mtu.nextCheck = now.Add(mtuCheckInterval)
	p.deps.host.queuePathCheck(r.Dst)
}

// fitPathMTUs fits the routes of the peers whose route goes to dst to
// mtu, the path MTU the kernel knows for it (Control.run asks the host, on
// the control goroutine: netlink answers at once, and no lock is held).
func fitPathMTUs(peers map[key.Key]*peer, dst netip.AddrPort, mtu int) {
	for _, p := range peers {
		if r := p.ep.Route(); r.Dst == dst {
			p.fitPathMTU(mtu, r)
		}
	}
}
