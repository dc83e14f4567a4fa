//go:build !linux

package osnet

import "log/slog"

// WatchNetwork is Linux-only (netlink); elsewhere a network change is
// noticed when peers fall silent.
func WatchNetwork(log *slog.Logger, iface string, done <-chan struct{}, changed chan<- struct{}) {
	<-done
}
