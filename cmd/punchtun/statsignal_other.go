//go:build !unix

package main

// onStatsSignal does nothing where there is no SIGUSR1.
func onStatsSignal(func()) {}
