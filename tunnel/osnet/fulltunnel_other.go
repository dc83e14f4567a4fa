//go:build !linux

package osnet

// FreeTable: there are no routing tables to choose from here.
func FreeTable() (uint32, error) { return 0, errNoConfigure }
