package control

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/nat/portmap"
)

// Port mapping (nat/portmap): the home router is asked to forward a port
// to our socket. The forward is offered to peers as our first candidate,
// and while it stands our NAT is told to the rendezvous as none: a peer,
// even behind a NAT that maps per destination, reaches us as if we were
// public. Asking runs on a helper goroutine, bounded by
// portmap.AskTimeout, and so does looking up the gateway, which reads the
// routing table: nothing on the control goroutine waits for either.

// portMapper is the mapping's owner, on the control goroutine.
type portMapper struct {
	host  portmapHost
	log   *slog.Logger
	clock clock
	ctx   context.Context // bounds the asking; cancelled on stop
	// dial and mark are the control plane's sockets' (attach sets them).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	mark uint32
	port func() uint16 // the shared socket's, which is mapped
	// gateway is the default gateway's address (portmap.DefaultGateway):
	// it reads the routing table, so it runs on helper goroutines only.
	gateway func() (netip.Addr, error)
	m       *portmap.Machine
	gw      netip.Addr // the gateway the mapping was asked of
	// offered is the endpoint the registrations carry (invalid: none).
	offered netip.AddrPort
}

// portmapHost is what the port mapper asks of the control plane: work on
// a helper goroutine and back on the control goroutine, the NAT that STUN
// found, and registrations sent anew.
type portmapHost interface {
	spawn(f func())
	post(f func()) bool
	stunMapping() nat.Mapping
	updateRegistrations(now time.Time)
}

// start listens for the gateway's announcements of a restart (NAT-PMP
// and PCP's, and UPnP's SSDP NOTIFYs).
func (pm *portMapper) start() {
	if pm.m.Mode() == portmap.ModeOff {
		return
	}
	pm.host.spawn(func() {
		pm.listen("the gateway's port mapping announcements", func() error {
			return portmap.ListenAnnouncements(pm.ctx, pm.hearer())
		})
	})
	pm.host.spawn(func() {
		pm.listen("the gateway's SSDP notices", func() error {
			return portmap.ListenSSDP(pm.ctx, func(gw netip.Addr) {
				pm.host.post(func() { pm.announced(gw, pm.clock.Now()) })
			})
		})
	})
}

// listenRetry is how often a listener that could not start is tried
// again: another program may hold its port without sharing it (an SSDP
// daemon without SO_REUSEADDR) and let it go later.
var listenRetry = 30 * time.Second

// listen runs a listener (run returns nil when pm.ctx ends) until the
// port mapper stops, starting it again every listenRetry while it cannot
// start. Without the listeners a restart is noticed only at the next
// renewal, so this is logged once, at debug level.
func (pm *portMapper) listen(what string, run func() error) {
	logged := false
	for {
		err := run()
		if err == nil || pm.ctx.Err() != nil {
			return
		}
		if !logged {
			pm.log.Debug("cannot hear "+what+"; trying again every "+listenRetry.String(), "err", err)
			logged = true
		}
		select {
		case <-pm.ctx.Done():
			return
		case <-time.After(listenRetry):
		}
	}
}

func (pm *portMapper) client(gw netip.Addr) *portmap.Client {
	lc := net.ListenConfig{Control: markSocket(pm.mark)}
	return &portmap.Client{Gateway: gw, Dial: pm.dial, ListenPacket: lc.ListenPacket}
}

func (pm *portMapper) tick(now time.Time) {
	ask, prev := pm.m.Tick(now)
	if !ask {
		return
	}
	port, protos := pm.port(), pm.m.Mode().Protocols()
	pm.host.spawn(func() {
		var (
			got  *portmap.Mapping
			errs = map[portmap.Protocol]error{}
		)
		gw, err := pm.gateway()
		if err != nil {
			for _, p := range protos {
				errs[p] = err
			}
		} else {
			ctx, cancel := context.WithTimeout(pm.ctx, portmap.AskTimeout)
			got, errs = pm.client(gw).MapAny(ctx, protos, port, prev, portmap.Lifetime)
			cancel()
		}
		if !pm.host.post(func() { pm.answered(pm.clock.Now(), gw, got, errs) }) && got != nil {
			pm.unmap(got) // stopping meanwhile
		}
	})
}

func (pm *portMapper) answered(now time.Time, gw netip.Addr, got *portmap.Mapping, errs map[portmap.Protocol]error) {
	had, restarts := pm.m.Current(), pm.m.Restarts()
	pm.m.Answered(now, got, errs)
	if pm.m.Restarts() != restarts {
		pm.log.Info("the gateway restarted (its epoch went back) and lost its forwards: mapped anew", "gateway", gw)
	}
	switch cur := pm.m.Current(); {
	case cur != nil && (had == nil || had.External != cur.External):
		pm.gw = gw
		pm.log.Info("port mapped", "protocol", cur.Protocol, "gateway", gw, "external", cur.External, "lifetime", cur.Lifetime)
	case cur == nil && had != nil:
		pm.log.Warn("port mapping lost", "protocol", had.Protocol, "reason", pm.m.Status(now).Reason)
	case cur == nil && had == nil && got == nil:
		pm.log.Debug("no port mapping", "reason", pm.m.Status(now).Reason)
	}
	pm.update(now)
}

// update follows a change of what can be offered: the rendezvous hear the
// new candidates and NAT at the next tick, and introduce us anew to the
// peers that want us.
func (pm *portMapper) update(now time.Time) {
	ep, ok := pm.m.Offer()
	if !ok || pm.host.stunMapping() == nat.MappingBlocked {
		ep = netip.AddrPort{}
	}
	if ep == pm.offered {
		return
	}
	if ep.IsValid() {
		pm.log.Info("offering the port mapping to peers", "endpoint", ep)
	} else if pm.offered.IsValid() {
		pm.log.Info("port mapping no longer offered", "reason", pm.m.Status(now).Reason)
	}
	pm.offered = ep
	pm.host.updateRegistrations(now)
}

// setPublic takes our public address as a rendezvous saw it.
func (pm *portMapper) setPublic(a netip.Addr, now time.Time) {
	if pm.m.SetPublic(a) {
		pm.update(now)
	}
}

// networkChanged asks again at once; a mapping of another gateway's is
// forgotten. Which gateway is ours now is looked up on a helper goroutine
// and posted back (reask).
func (pm *portMapper) networkChanged() {
	if pm.m.Mode() == portmap.ModeOff {
		return
	}
	pm.host.spawn(func() {
		gw, _ := pm.gateway()
		pm.host.post(func() { pm.reask(gw, pm.clock.Now()) })
	})
}

// reask asks again at once, now that the gateway is known to be gw.
func (pm *portMapper) reask(gw netip.Addr, now time.Time) {
	pm.m.Reask(now, gw != pm.gw)
	pm.update(now)
}

// hearer takes announcements on the listener's goroutine: only the
// gateway's reach the control goroutine. The gateway is looked up there,
// at most once every gatewayRecheck: anyone on the LAN can send
// announcements as fast as it likes, and a lookup reads the routing
// table. A gateway changed meanwhile is asked anyway (networkChanged).
func (pm *portMapper) hearer() func(from netip.Addr) {
	var (
		gw  netip.Addr
		err error
		at  time.Time
	)
	return func(from netip.Addr) {
		if now := time.Now(); at.IsZero() || now.Sub(at) >= gatewayRecheck {
			gw, err = pm.gateway()
			at = now
		}
		if err == nil && from == gw {
			pm.host.post(func() { pm.announced(from, pm.clock.Now()) })
		}
	}
}

// gatewayRecheck is how long the announcement listener trusts its lookup
// of the gateway.
const gatewayRecheck = time.Second

// announced: the gateway restarted or changed its address, and may have
// lost our mapping.
func (pm *portMapper) announced(from netip.Addr, now time.Time) {
	if pm.m.Announced(now) {
		pm.log.Info("the gateway announced a restart or a new address: mapping again", "gateway", from)
	}
}

// shutdown deletes the mapping from the router, within a second.
func (pm *portMapper) shutdown() {
	if cur := pm.m.Current(); cur != nil {
		pm.unmap(cur)
	}
}

func (pm *portMapper) unmap(m *portmap.Mapping) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := pm.client(m.Gateway).Unmap(ctx, *m); err != nil {
		pm.log.Warn("cannot delete the port mapping", "protocol", m.Protocol, "err", err)
	}
}

// candidates are what a registration offers: the mapping first, then
// the local addresses.
func (pm *portMapper) candidates(local []netip.AddrPort) []netip.AddrPort {
	if !pm.offered.IsValid() {
		return local
	}
	return append([]netip.AddrPort{pm.offered}, slices.DeleteFunc(local, func(a netip.AddrPort) bool { return a == pm.offered })...)
}

// ourNAT is our NAT as peers are to treat it: none while a mapping is
// offered, as STUN found it otherwise.
func (pm *portMapper) ourNAT() nat.Mapping {
	if pm.offered.IsValid() {
		return nat.MappingNone
	}
	return pm.host.stunMapping()
}

// PortMappingStatus is for status and metrics.
type PortMappingStatus struct {
	portmap.Status
	// Counts are the asks' outcomes by protocol and outcome.
	Counts map[portmap.Protocol]map[string]uint64
}

// view is a copy for the View.
func (pm *portMapper) view(now time.Time) PortMappingStatus {
	v := PortMappingStatus{Status: pm.m.Status(now), Counts: map[portmap.Protocol]map[string]uint64{}}
	if pm.offered.IsValid() {
		v.Offered, v.External = true, pm.offered.String()
	} else if v.Offered {
		v.Offered, v.Reason = false, "UDP blocked on this network"
	}
	for p, byOutcome := range pm.m.Counts() {
		v.Counts[p] = maps.Clone(byOutcome)
	}
	return v
}
