//go:build !linux

package portmap

import (
	"context"
	"net/netip"
)

// ListenAnnouncements hears no announcements off Linux: the gateway is
// not found there (DefaultGateway), so nothing is mapped to renew.
func ListenAnnouncements(ctx context.Context, got func(from netip.Addr)) error {
	<-ctx.Done()
	return nil
}

// ListenSSDP hears no NOTIFYs off Linux, for the same reason.
func ListenSSDP(ctx context.Context, restarted func(gw netip.Addr)) error {
	<-ctx.Done()
	return nil
}
