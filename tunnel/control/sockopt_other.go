//go:build !linux

package control

import "syscall"

// markSocket: SO_MARK is Linux's; elsewhere sockets go unmarked.
func markSocket(mark uint32) func(network, address string, c syscall.RawConn) error { return nil }
