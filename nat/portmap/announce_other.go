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
