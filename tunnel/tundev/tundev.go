// Package tundev is the TUN device as wireguard-go sees it: reads
// gathered into batches (tunbatch.go), packets to members not yet known
// held until they are found (hold.go), both directions passed through
// the network policy's filter (tunnel/policy), and the packets
// wireguard-go holds bounded, on the TUN's side and on the socket's
// (inflight.go).
//
// It knows nothing of the socket but conn.Bind, nor of the control plane
// but the addresses it is told of.
package tundev

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// Device wraps a TUN device for wireguard-go.
type Device struct {
	tun.Device // the outermost wrapper: what wireguard-go reads and writes
	hold       *holdingTUN
	in, out    *inflight
}

// New wraps dev: reads batched, packets to members not yet known held
// (onMiss is told of each, without blocking), both directions passed
// through filter, and bounded with the socket that Bind wraps.
func New(dev tun.Device, filter func(tun.Device) tun.Device, onMiss func(netip.Addr)) *Device {
	d := &Device{in: newInflight(), out: newInflight()}
	d.hold = newHoldingTUN(newBatchingTUN(dev, d.out.room), dev, onMiss)
	d.Device = &boundedTUN{Device: filter(d.hold), in: d.in, out: d.out}
	return d
}

// Bind wraps wireguard-go's socket so that it counts, with the device,
// the packets wireguard-go holds.
func (d *Device) Bind(b conn.Bind) conn.Bind { return &boundedBind{Bind: b, in: d.in, out: d.out} }

// SetNetwork names the network's prefixes, whose addresses no peer holds
// are held and looked up, and the static peers' AllowedIPs, which are
// never held. Nil network: nothing is held.
func (d *Device) SetNetwork(network, static []netip.Prefix) {
	d.hold.update(func(ds *destinations) { ds.network, ds.static = network, static })
}

// AddDestinations says that a peer in WireGuard now holds addrs: what was
// held for them goes to WireGuard now (link.DataPath).
func (d *Device) AddDestinations(addrs []netip.Addr) {
	d.hold.update(func(ds *destinations) {
		for _, a := range addrs {
			ds.members[a] = struct{}{}
		}
	})
}

// RemoveDestinations says that no peer holds addrs any more.
func (d *Device) RemoveDestinations(addrs []netip.Addr) {
	d.hold.update(func(ds *destinations) {
		for _, a := range addrs {
			delete(ds.members, a)
		}
	})
}

// Inject hands wireguard-go pkt as if the TUN had read it (link.DataPath).
func (d *Device) Inject(pkt []byte) { d.hold.inject(pkt) }

// HeldDropped counts the packets held for a member and let go.
func (d *Device) HeldDropped() uint64 { return d.hold.Dropped.Load() }
