//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"
)

// onStatsSignal calls f on every SIGUSR1: `kill -USR1 PID` makes the
// rendezvous log its counters.
func onStatsSignal(f func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	go func() {
		for range c {
			f()
		}
	}()
}
