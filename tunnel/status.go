package tunnel

import (
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/tunnel/control"
)

// Status is what `punchtun status` shows of a running interface.
type Status struct {
	Interface  string             `json:"interface"`
	PublicKey  string             `json:"public_key"`
	ListenPort uint16             `json:"listen_port"`
	NAT        string             `json:"nat"` // our NAT's mapping: none, easy, hard, udp-blocked, unknown
	Rendezvous []RendezvousStatus `json:"rendezvous"`
	Peers      []PeerStatus       `json:"peers"`
	// IdlePacketsPerMinute is what the tunnel sends and receives while
	// idle: each direct path's heartbeat and its answer, each
	// registration refresh and its acknowledgement.
	IdlePacketsPerMinute float64 `json:"idle_packets_per_minute"`
	// RelayedBytes counts the WireGuard bytes relayed since start, by
	// relay: "rendezvous" (UDP), "rendezvous-tcp" and "turn".
	RelayedBytes map[string]ByteCounts `json:"relayed_bytes"`
	// TURN is our allocation on a TURN server, while there is one.
	TURN *TURNStatus `json:"turn,omitempty"`
}

// ByteCounts are bytes sent and received.
type ByteCounts struct {
	Tx uint64 `json:"tx"`
	Rx uint64 `json:"rx"`
}

// TURNStatus is our allocation on a TURN server.
type TURNStatus struct {
	Server  string `json:"server"`  // its URI, as the rendezvous handed it out
	Relayed string `json:"relayed"` // our relayed address, where peers send
}

// RendezvousStatus is one rendezvous as the peer sees it.
type RendezvousStatus struct {
	Address    string `json:"address"`
	Registered bool   `json:"registered"`
	Public     string `json:"public_endpoint"` // our endpoint as it sees us
}

// PeerStatus is one peer. Path is "direct", "lan", "relay" or
// "connecting"; a relayed peer's Endpoint is the relay's address (through
// a TURN server: the peer's relayed address there), Via names the relay
// (the rendezvous's address, or the TURN server's URI), and Reason says
// why it is relayed.
type PeerStatus struct {
	Name          string               `json:"name"`
	PublicKey     string               `json:"public_key"`
	Path          string               `json:"path"`
	Endpoint      string               `json:"endpoint"`
	RTTMillis     float64              `json:"rtt_ms"`
	LastHandshake string               `json:"last_handshake"` // RFC 3339, empty if none yet
	RxBytes       uint64               `json:"rx_bytes"`
	TxBytes       uint64               `json:"tx_bytes"`
	Reason        string               `json:"reason,omitempty"`
	Via           string               `json:"via,omitempty"`
	NAT           string               `json:"nat,omitempty"`     // the peer's NAT mapping, as it reported it
	History       []control.PathChange `json:"history,omitempty"` // path changes of the last hour
	Probing       bool                 `json:"probing,omitempty"` // a punching round is under way
	// PathMTU is the path MTU of the route in use, once the kernel learned
	// it from ICMP (0: not known to be below what the links take); MTU is
	// then what the tunnel carries whole to the peer.
	PathMTU int `json:"path_mtu,omitempty"`
	MTU     int `json:"mtu,omitempty"`
	// KeepaliveSeconds is how often an idle direct path is probed, as
	// learned from the NATs on it (nat.HeartbeatInterval).
	KeepaliveSeconds float64 `json:"keepalive_s,omitempty"`
}

// Status reports the interface's state now.
func (t *Tunnel) Status() (*Status, error) {
	wg, err := t.wireGuardPeers()
	if err != nil {
		return nil, err
	}
	cfg := t.config()
	st := &Status{
		Interface:  t.name,
		PublicKey:  cfg.Interface.PrivateKey.Public().String(),
		ListenPort: t.ListenPort(),
		Rendezvous: []RendezvousStatus{},
		Peers:      []PeerStatus{},
	}
	v := t.ctl.View()
	if v.TURN != nil {
		st.TURN = &TURNStatus{Server: v.TURN.Server, Relayed: v.TURN.Relayed}
	}
	st.RelayedBytes = map[string]ByteCounts{}
	for name, n := range t.bind.RelayedBytes() {
		st.RelayedBytes[name] = ByteCounts{Tx: n[0], Rx: n[1]}
	}
	st.NAT = v.NAT.String()
	for _, s := range v.Servers {
		rs := RendezvousStatus{Address: s.HostPort, Registered: s.Registered}
		if s.Registered {
			st.IdlePacketsPerMinute += 2 * float64(time.Minute) / float64(wire.RefreshInterval)
		}
		if s.Observed.IsValid() {
			rs.Public = s.Observed.String()
		}
		st.Rendezvous = append(st.Rendezvous, rs)
	}
	for _, p := range cfg.Peers {
		w := wg[p.PublicKey]
		ps := PeerStatus{
			Name:      p.Name,
			PublicKey: p.PublicKey.String(),
			Path:      nat.PathNone.String(),
			RxBytes:   w.rx,
			TxBytes:   w.tx,
		}
		if !w.handshake.IsZero() {
			ps.LastHandshake = w.handshake.UTC().Format(time.RFC3339)
		}
		if pv, ok := v.Peers[p.PublicKey]; ok {
			ps.Path, ps.NAT, ps.History = pv.Path, pv.NAT.String(), pv.History
			ps.Probing, ps.PathMTU, ps.MTU = pv.Probing, pv.PathMTU, pv.MTU
			if pv.Route.IsValid() {
				ps.Endpoint = pv.Route.String()
			}
			ps.Reason, ps.Via = pv.Reason, pv.Via
			if pv.Heartbeat > 0 {
				ps.RTTMillis = float64(pv.RTT.Microseconds()) / 1000
				ps.KeepaliveSeconds = pv.Heartbeat.Seconds()
				st.IdlePacketsPerMinute += 2 * float64(time.Minute) / float64(pv.Heartbeat)
			}
		} else if w.endpoint.IsValid() && !w.handshake.IsZero() {
			// A peer with a fixed Endpoint: plain WireGuard, no probes, so no RTT.
			ps.Path, ps.Endpoint = nat.KindOf(w.endpoint).String(), w.endpoint.String()
		}
		st.Peers = append(st.Peers, ps)
	}
	return st, nil
}
