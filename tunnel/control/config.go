package control

import (
	"net/netip"

	"github.com/punchtun/punchtun/nat/portmap"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Config is what the control plane takes of a tunnel's config; a reload
// may change all but PrivateKey and Interface (Reconfigure).
type Config struct {
	PrivateKey key.Private
	Interface  string         // the tunnel's interface: never a candidate
	Addresses  []netip.Prefix // the tunnel's addresses: never candidates
	MTU        int            // the interface's
	Servers    []ServerConfig
	Peers      []PeerConfig // the peers it finds (those without a fixed Endpoint)
	// The network this interface is a member of, with its certificate;
	// zero and nil for none. Static are every static peer's AllowedIPs,
	// which no member may hold.
	Network cert.NetworkKey
	Cert    *cert.Cert
	Static  []netip.Prefix
	// Documents are the network's policy or revocations the config names
	// (Policy =), verified.
	Documents []*cert.Document
	// PortMapping is which protocols ask the router for a port forward
	// (portMapper); set at start, not by a reload.
	PortMapping portmap.Mode
	// NoLocalCandidates keeps the host's own addresses from peers (set at
	// start, not by a reload).
	NoLocalCandidates bool
}

// ServerConfig names one rendezvous.
type ServerConfig struct {
	HostPort string
	Key      key.Key
}

// PeerConfig names one peer the control plane finds.
type PeerConfig struct {
	Name string
	Key  key.Key
}
