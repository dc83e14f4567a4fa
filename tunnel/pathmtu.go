package tunnel

import (
	"cmp"
	"errors"
	"net/netip"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/punchtun/punchtun/rendezvous/wire"
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
// punchtun does two things. The Bind sends a refused batch again one
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

// innerMTU is the largest packet the tunnel carries whole over a path of
// pathMTU bytes to dst, through a relay if relayed.
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

// isMsgSize reports whether a send failed because a datagram exceeds the
// path MTU the kernel knows for its destination.
func isMsgSize(err error) bool { return errors.Is(err, syscall.EMSGSIZE) }

// sendStd sends bufs to dst on the shared socket. A batch the kernel
// refuses as too big for the path goes again one datagram at a time, and
// the control plane hears of the path (onMsgSize).
func (b *Bind) sendStd(bufs [][]byte, dst *conn.StdNetEndpoint) error {
	err := b.sendStdOnce(bufs, dst)
	if len(bufs) < 2 || !isMsgSize(err) {
		return err
	}
	err = nil
	for _, p := range bufs {
		if e := b.sendStdOnce([][]byte{p}, dst); e != nil {
			err = e
		}
	}
	if f := b.onMsgSize.Load(); f != nil {
		(*f)(dst.AddrPort)
	}
	return err
}

// OnMsgSize sets what the Bind calls (on WireGuard's send goroutines: it
// must not block) when a batch to dst was too big for the path.
func (b *Bind) OnMsgSize(f func(dst netip.AddrPort)) { b.onMsgSize.Store(&f) }

// queuePathCheck asks the control goroutine to look up the path MTU to
// dst. It never blocks: a full queue means checks are pending anyway.
func (c *control) queuePathCheck(dst netip.AddrPort) {
	select {
	case c.pathChecks <- dst:
	default:
	}
}

// checkPathMTU looks up the path MTU to dst and fits the routes of the
// peers that use that path to it, on the control goroutine: netlink
// answers at once, and no lock is held.
func (c *control) checkPathMTU(dst netip.AddrPort) {
	mtu := pathMTU(dst.Addr(), c.mark)
	for _, p := range c.peers {
		r := p.ep.Route()
		if r.Dst != dst {
			continue
		}
		routeMTU := 0
		if mtu > 0 {
			if inner := innerMTU(mtu, dst.Addr(), r.Relay); inner < c.ifaceMTU {
				routeMTU = max(inner, minIPv4MTU)
			}
		}
		if p.pathMTU != mtu {
			c.log.Info("path MTU", "peer", p.label(), "endpoint", dst, "path_mtu", mtu, "tunnel_mtu", cmp.Or(routeMTU, c.ifaceMTU))
			p.pathMTU = mtu
		}
		if p.routeMTU != routeMTU {
			p.routeMTU = routeMTU
			if err := c.wg.setPeerMTU(p.key, routeMTU); err != nil {
				c.log.Warn("cannot set the MTU of the routes to a peer", "peer", p.label(), "mtu", routeMTU, "err", err)
			}
		}
	}
}

// minIPv4MTU is the least MTU every IPv4 host must take.
const minIPv4MTU = 576

// mtuCheckInterval spaces the path MTU look-ups of a tunnel in use. A
// batch refused as too big asks at once; this catches what fits a
// datagram at a time, which the kernel fragments without a word (IPv6
// here, and birthday sockets).
const mtuCheckInterval = 5 * time.Second

// tickPathMTU queues a path MTU check for p while its tunnel is in use.
func (c *control) tickPathMTU(p *peer, now time.Time) {
	r := p.ep.Route()
	if !r.Dst.IsValid() || now.Before(p.nextMTUCheck) || now.Sub(time.Unix(0, p.ep.lastData.Load())) > activeWindow {
		return
	}
	p.nextMTUCheck = now.Add(mtuCheckInterval)
	c.queuePathCheck(r.Dst)
}
