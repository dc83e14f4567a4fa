//go:build !linux

package tunnel

import "syscall"

// markSocket: SO_MARK is Linux's; elsewhere sockets go unmarked.
func markSocket(mark uint32) func(network, address string, c syscall.RawConn) error { return nil }

// msgTrunc: no truncation flag is read here (up runs on Linux only).
const msgTrunc = 0
