// Package osnet is the host side of a tunnel interface, what wg-quick does
// around WireGuard: the interface's addresses, MTU and routes (and each
// peer's route MTU), the routing table they go in (Table), a full
// tunnel's policy routing, DNS through resolvconf, the PreUp/PostUp/
// PreDown/PostDown hooks, the path MTUs the kernel learned, and watching
// the host's network for changes.
//
// What differs by platform sits behind Interface and a few functions, in
// _linux.go files (netlink) with _other.go stubs that say what is
// missing: another platform is files of its own, not edits throughout.
// It knows nothing of WireGuard, peers or the rendezvous: it takes
// prefixes, MTUs and marks.
package osnet

import (
	"fmt"
	"net"
	"net/netip"
)

// Interface is the host's side of one tunnel interface: its addresses, MTU and
// routes, and a full tunnel's policy routing. Open returns this
// platform's.
type Interface interface {
	// Configure gives the interface cfg's MTU and addresses, brings it
	// up, and adds cfg's routes.
	Configure(cfg Config) error
	// Reconfigure changes the running interface from old to cfg,
	// touching only what differs.
	Reconfigure(old, cfg Config) error
	// SetRouteMTU routes prefixes into the interface with an MTU of mtu
	// (0: the link's), so that this host's senders size their packets to
	// fit a peer's path, and routers forwarding into the tunnel answer
	// bigger ones with ICMP. An IPv6 route cannot go below 1280: IPv6
	// prefixes are left to fragmentation then.
	SetRouteMTU(prefixes []netip.Prefix, mtu int) error
	// FullTunnel routes defaults (0.0.0.0/0, ::/0) into the interface
	// through table mark and adds the policy rules that keep traffic
	// marked with mark out of it (Linux's netlinkInterface); the function
	// returned undoes it.
	FullTunnel(mark uint32, defaults []netip.Prefix) (undo func() error, err error)
}

// Config is what Interface sets on the interface.
type Config struct {
	MTU       int
	Addresses []netip.Prefix
	Routes    []netip.Prefix
}

// CheckFree fails if an interface of that name exists: taking over
// somebody else's interface, or deleting it on exit, would be worse.
func CheckFree(name string) error {
	if _, err := net.InterfaceByName(name); err == nil {
		return fmt.Errorf("interface %s already exists", name)
	}
	return nil
}
