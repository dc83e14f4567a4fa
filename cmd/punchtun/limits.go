package main

import (
	"flag"

	"github.com/punchtun/punchtun/rendezvous"
)

// addLimitFlags adds the rendezvous's bounds to fs; the function it returns
// copies them into a Config.
func addLimitFlags(fs *flag.FlagSet) func(*rendezvous.Config) {
	maxPeers := fs.Int("max-peers", rendezvous.DefaultMaxPeers, "most peers registered at once; more registrations are dropped")
	sourceRate := fs.Float64("source-rate", rendezvous.DefaultSourceRate,
		"STUN answers and control messages per second per source address (IPv6: per /64), burst twice that; 0 for no limit")
	keyRate := fs.Float64("key-rate", rendezvous.DefaultKeyRate, "authenticated messages per second per peer key, burst twice that; 0 for no limit")
	newKeyRate := fs.Float64("new-key-rate", rendezvous.DefaultNewKeyRate,
		"messages per second from keys neither registered nor recently seen (each costs a Curve25519\nmultiplication); 0 for no limit")
	maxMembers := fs.Int("max-members", rendezvous.DefaultMaxMembers, "most members of one network registered at once; more are refused (network-full)")
	lookupRate := fs.Float64("lookup-rate", rendezvous.DefaultLookupRate, "lookups per second per member, burst twice that; 0 for no limit")
	return func(c *rendezvous.Config) {
		c.MaxPeers = *maxPeers
		c.MaxMembers = *maxMembers
		c.LookupRate = noLimitIfZero(*lookupRate)
		c.SourceRate = noLimitIfZero(*sourceRate)
		c.KeyRate = noLimitIfZero(*keyRate)
		c.NewKeyRate = noLimitIfZero(*newKeyRate)
	}
}

// noLimitIfZero maps a flag's 0 (no limit) to Config's negative rate.
func noLimitIfZero(r float64) float64 {
	if r == 0 {
		return -1
	}
	return r
}
