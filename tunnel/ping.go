package tunnel

// `punchtun ping PEER`: a probe over the tunnel's control path, the sealed
// wire.Ping the control plane punches and keeps paths with, sent on the
// peer's current route — to the peer's endpoint, or wrapped for the relay —
// and its wire.Pong, timed (control.Control.Ping). It asks over the status
// socket (StatusSocket): the client sends one request line,
// {"request":"ping",...}.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/config"
)

// PingReply is one probe's outcome. Path is the way the pong came: direct,
// lan, relay or relay-tcp; Endpoint the peer's address, or the relay's.
type PingReply struct {
	Peer      string  `json:"peer"` // its Name, or its public key
	PublicKey string  `json:"public_key"`
	Path      string  `json:"path,omitempty"`
	Endpoint  string  `json:"endpoint,omitempty"`
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// Error says why no pong came; UnknownPeer that this interface has no
	// such peer.
	Error       string `json:"error,omitempty"`
	UnknownPeer bool   `json:"unknown_peer,omitempty"`
}

// maxPingTimeout bounds one probe's wait.
const maxPingTimeout = time.Minute

// ErrUnknownPeer is returned by Ping for a peer the interface does not have.
var ErrUnknownPeer = errors.New("no such peer")

// unknownPeerError is the daemon's word that it has no such peer.
type unknownPeerError string

func (e unknownPeerError) Error() string        { return string(e) }
func (e unknownPeerError) Is(target error) bool { return target == ErrUnknownPeer }

// findPeer resolves a peer of cfg, interface iface's, by name, public key
// or virtual address (the most specific AllowedIPs prefix that holds it).
func findPeer(cfg *config.Config, iface, s string) (key.Key, string, error) {
	addr, addrErr := netip.ParseAddr(s)
	best := -1
	var bestBits int
	for i, p := range cfg.Peers {
		if p.Name == s || p.PublicKey.String() == s {
			best = i
			break
		}
		if addrErr != nil {
			continue
		}
		for _, pre := range p.AllowedIPs {
			if pre.Contains(addr.Unmap()) && (best < 0 || pre.Bits() > bestBits) {
				best, bestBits = i, pre.Bits()
			}
		}
	}
	if best < 0 {
		return key.Key{}, "", fmt.Errorf("%w %q on %s (give its Name, public key or virtual IP)", ErrUnknownPeer, s, iface)
	}
	p := cfg.Peers[best]
	if p.Endpoint != "" {
		return key.Key{}, "", fmt.Errorf("peer %s has a fixed Endpoint: it is plain WireGuard, which answers no probes; use ping on its virtual IP", peerLabel(p))
	}
	return p.PublicKey, peerLabel(p), nil
}

// Ping asks the punchtun running iface to probe peer once, waiting up to
// timeout for the pong. An interface without that peer returns an error
// that wraps ErrUnknownPeer.
func Ping(runDir, iface, peer string, timeout time.Duration) (*PingReply, error) {
	c, err := dialStatus(runDir, iface)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout + 10*time.Second))
	req, _ := json.Marshal(request{Request: "ping", Peer: peer, TimeoutMS: int(timeout / time.Millisecond)})
	if _, err := c.Write(append(req, '\n')); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(c).Decode(&raw); err != nil {
		return nil, fmt.Errorf("read ping reply of %s: %w", iface, err)
	}
	if _, isStatus := raw["interface"]; isStatus {
		return nil, fmt.Errorf("the punchtun running %s does not answer ping requests: it is older than this punchtun; restart it", iface)
	}
	var r PingReply
	b, _ := json.Marshal(raw)
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	switch {
	case r.UnknownPeer:
		return nil, unknownPeerError(r.Error)
	case r.PublicKey == "" && r.Error != "":
		return nil, errors.New(r.Error)
	}
	return &r, nil
}
