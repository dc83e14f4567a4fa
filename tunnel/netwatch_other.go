//go:build !linux

package tunnel

import "log/slog"

// watchNetwork is Linux-only (netlink); elsewhere a network change is
// noticed when peers fall silent.
func watchNetwork(log *slog.Logger, iface string, done <-chan struct{}, changed chan<- struct{}) {
	<-done
}
