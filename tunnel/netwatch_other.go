//go:build !linux

package tunnel

// watchNetwork is Linux-only (netlink); elsewhere a network change is
// noticed when peers fall silent.
func watchNetwork(iface string, done <-chan struct{}, changed chan<- struct{}) error { return nil }
