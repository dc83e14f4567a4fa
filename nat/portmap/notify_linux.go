package portmap

import (
	"context"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"
)

// gatewayCheck is how often ListenSSDP looks whether the default gateway,
// and so the interface to hear its NOTIFYs on, changed.
const gatewayCheck = 10 * time.Second

// ListenSSDP calls restarted with the gateway's address each time it
// announces by SSDP NOTIFY that it came up anew, until ctx ends. It
// hears the group on the interface towards the default gateway, and
// follows the gateway when it changes. The port is shared (SO_REUSEADDR)
// with the host's other SSDP listeners.
func ListenSSDP(ctx context.Context, restarted func(gw netip.Addr)) error {
	conn, err := listenGroup(ctx, ssdpGroup)
	if err != nil {
		return err
	}
	defer conn.Close()
	group := &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250)}
	p := ipv4.NewPacketConn(conn)
	var (
		gw     netip.Addr
		joined *net.Interface
		watch  bootWatch
		buf    = make([]byte, maxSSDPAnswer+1)
	)
	follow := func() {
		now, _ := DefaultGateway()
		ifi := interfaceOf(now)
		if now == gw && (ifi == nil) == (joined == nil) && (ifi == nil || ifi.Index == joined.Index) {
			return
		}
		if joined != nil {
			p.LeaveGroup(joined, group)
			joined = nil
		}
		gw = now
		if ifi != nil && p.JoinGroup(ifi, group) == nil {
			joined = ifi
		}
	}
	follow()
	next := time.Now().Add(gatewayCheck)
	for {
		conn.SetReadDeadline(next)
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if ctx.Err() != nil {
			return nil
		}
		if !time.Now().Before(next) {
			follow()
			next = time.Now().Add(gatewayCheck)
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return err
		}
		if !gw.IsValid() || src.Addr().Unmap() != gw {
			continue // only the gateway's own notices count
		}
		if notice, ok := parseSSDPNotify(buf[:n]); ok && watch.notice(gw, notice) {
			restarted(gw)
		}
	}
}

// interfaceOf is the up interface whose subnet holds gw (nil: none).
func interfaceOf(gw netip.Addr) *net.Interface {
	if !gw.IsValid() {
		return nil
	}
	ifis, _ := net.Interfaces()
	for i := range ifis {
		if ifis[i].Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifis[i].Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if p, err := netip.ParsePrefix(ipn.String()); err == nil && p.Contains(gw) {
					return &ifis[i]
				}
			}
		}
	}
	return nil
}
