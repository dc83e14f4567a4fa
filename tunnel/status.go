package tunnel

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/nat/portmap"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/control"
	"github.com/punchtun/punchtun/tunnel/policy"
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
	// Network is the network this interface is a member of.
	Network *NetworkStatus `json:"network,omitempty"`
	// PortMapping is the router's port forward to us: its protocol,
	// external endpoint and lifetime left, or why there is none.
	PortMapping PortMappingStatus `json:"port_mapping"`
	// Mode is "tun" or "userspace"; in userspace mode, SOCKS5 and
	// HTTPProxy are where the proxies listen (omitted: off) and Forwards
	// the port forwards, as tcp:22=127.0.0.1:22; StackDropped counts the
	// packets the in-process stack and the tunnel could not take from
	// each other (malformed, or over the MTU), StackICMPRefused those of
	// them that were ICMP errors naming a connection to another peer
	// than the one that sent them.
	Mode             string   `json:"mode"`
	SOCKS5           string   `json:"socks5,omitempty"`
	HTTPProxy        string   `json:"http_proxy,omitempty"`
	Forwards         []string `json:"forwards,omitempty"`
	StackDropped     *uint64  `json:"stack_dropped,omitempty"`
	StackICMPRefused *uint64  `json:"stack_icmp_refused,omitempty"`
}

// PortMappingStatus is the mapping (mode, protocol, external, lifetime_left_s,
// offered, reason) and the asks' outcomes so far, by protocol and outcome:
// mapped, renewed, refused, no_answer, failed, double_nat.
type PortMappingStatus struct {
	portmap.Status
	Outcomes map[string]map[string]uint64 `json:"outcomes"`
}

// NetworkStatus is this interface's membership.
type NetworkStatus struct {
	Key        string `json:"key"`         // the network's public key
	Name       string `json:"name"`        // our certificate's name
	ValidUntil string `json:"valid_until"` // our certificate's expiry, RFC 3339
	// Refused is why the rendezvous refuses our certificate, if it does:
	// bad-signature, other-network, expired, not-yet-valid, key-mismatch,
	// overlap, malformed, network-full, revoked, retired, superseded.
	Refused string `json:"refused,omitempty"`
	// Members is how many members are in WireGuard now; Refusals counts
	// the members refused here (introduced with a certificate that does
	// not check out), by reason; HeldDropped the packets held for a
	// member not yet found and let go.
	Members     int               `json:"members"`
	Refusals    map[string]uint64 `json:"refusals"`
	HeldDropped uint64            `json:"held_dropped"`
	// CertificateWarning is set from 14 days before our certificate
	// expires (the log says it once a day too).
	CertificateWarning string `json:"certificate_warning,omitempty"`
	// StateWarning is set while the network's state (the documents held,
	// the newest certificates seen) cannot be kept across restarts — no
	// state directory, or its files cannot be written — and says what a
	// restart would forget.
	StateWarning string `json:"state_warning,omitempty"`
	// Policy is the network's policy this member enforces on what members
	// send it; none: members reach its own addresses fully.
	Policy *PolicyStatus `json:"policy,omitempty"`
	// Filtered counts the packets from members the filter dropped, by
	// reason (no-rule, malformed, destination), policy or not: a member's
	// packet to an address that is not ours is dropped either way.
	Filtered map[string]uint64 `json:"filtered"`
	// Revocations held, the member keys they revoke, the certificates
	// they retire (until those expire), and the documents refused (not
	// signed by the network key, another network's).
	Revocations      int    `json:"revocations"`
	RevokedKeys      int    `json:"revoked_keys"`
	RetiredCerts     int    `json:"retired_certs"`
	DocumentsRefused uint64 `json:"documents_refused"`
	// GossipDropped counts the members' in-tunnel gossip dropped, by
	// reason: limited (over a member's budget), junk (malformed, or a
	// document not of this network).
	GossipDropped map[string]uint64 `json:"gossip_dropped"`
}

// PolicyStatus is the policy enforced.
type PolicyStatus struct {
	Seq   uint64   `json:"seq"`
	Rules []string `json:"rules"`
	// Allowed counts, per rule, the flows it let in; Dropped the packets
	// dropped, by reason (no-rule, malformed, destination); Flows the connections
	// whose replies pass, FlowsRefused those not tracked because the
	// table was full, FlowsEvicted those let go early to keep each
	// member within its share.
	Allowed      []uint64          `json:"allowed"`
	Dropped      map[string]uint64 `json:"dropped"`
	Flows        int               `json:"flows"`
	FlowsRefused uint64            `json:"flows_refused"`
	FlowsEvicted uint64            `json:"flows_evicted"`
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
	// TCP is the rendezvous's address on the TCP link, while UDP is taken
	// for blocked, and TCPReason why the link was opened.
	TCP       string `json:"tcp,omitempty"`
	TCPReason string `json:"tcp_reason,omitempty"`
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
	// For a member of the network, found on demand: its addresses and
	// its certificate's expiry (RFC 3339).
	Member     bool     `json:"member,omitempty"`
	Addresses  []string `json:"addresses,omitempty"`
	ValidUntil string   `json:"valid_until,omitempty"`
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
		Mode:       t.mode(),
	}
	if t.user != nil {
		t.user.statusOf(st)
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
	st.PortMapping = PortMappingStatus{Status: v.PortMapping.Status, Outcomes: map[string]map[string]uint64{}}
	for p, byOutcome := range v.PortMapping.Counts {
		st.PortMapping.Outcomes[p.String()] = byOutcome
	}
	for _, s := range v.Servers {
		rs := RendezvousStatus{Address: s.HostPort, Registered: s.Registered, TCP: s.TCP, TCPReason: s.TCPReason}
		if s.Registered {
			st.IdlePacketsPerMinute += 2 * float64(time.Minute) / float64(wire.RefreshInterval)
		}
		if s.Observed.IsValid() {
			rs.Public = s.Observed.String()
		}
		st.Rendezvous = append(st.Rendezvous, rs)
	}
	if c := cfg.Interface.Certificate; c != nil {
		st.Network = &NetworkStatus{Key: cfg.Interface.Network.String(), Name: c.Name,
			ValidUntil: c.NotAfter.UTC().Format(time.RFC3339), Refused: v.Refused,
			Refusals: t.ctl.MemberRefusals(), HeldDropped: t.tun.HeldDropped(),
			Revocations: v.Revocations, RevokedKeys: v.RevokedKeys, RetiredCerts: v.RetiredCerts, DocumentsRefused: v.DocumentsRefused, StateWarning: v.StateWarning,
			GossipDropped: map[string]uint64{"limited": v.GossipLimited, "junk": v.GossipJunk}}
		if left := time.Until(c.NotAfter); left < control.CertWarnBefore {
			st.Network.CertificateWarning = fmt.Sprintf("the certificate expires in %s: sign a new one and apply it with punchtun syncconf", left.Round(time.Minute))
		}
		if v.Policy != nil {
			st.Network.Policy = policyStatus(v.Policy, t.ctl.Filter())
		}
		st.Network.Filtered = filterDrops(t.ctl.Filter())
	}
	for _, p := range cfg.Peers {
		st.Peers = append(st.Peers, peerStatus(p.Name, p.PublicKey, wg[p.PublicKey], v, &st.IdlePacketsPerMinute))
	}
	var members []PeerStatus
	for k, pv := range v.Peers {
		if c := pv.Member; c != nil {
			ps := peerStatus(c.Name, k, wg[k], v, &st.IdlePacketsPerMinute)
			ps.Member, ps.ValidUntil = true, c.NotAfter.UTC().Format(time.RFC3339)
			for _, a := range c.Addresses {
				ps.Addresses = append(ps.Addresses, a.Addr().String())
			}
			members = append(members, ps)
		}
	}
	slices.SortFunc(members, func(a, b PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	st.Peers = append(st.Peers, members...)
	if st.Network != nil {
		st.Network.Members = len(members)
	}
	return st, nil
}

// peerStatus is one peer's status, from WireGuard's counters and the
// control plane's view; its heartbeat adds to idle.
func peerStatus(name string, k key.Key, w wgPeer, v *control.View, idle *float64) PeerStatus {
	ps := PeerStatus{
		Name:      name,
		PublicKey: k.String(),
		Path:      nat.PathNone.String(),
		RxBytes:   w.rx,
		TxBytes:   w.tx,
	}
	if !w.handshake.IsZero() {
		ps.LastHandshake = w.handshake.UTC().Format(time.RFC3339)
	}
	if pv, ok := v.Peers[k]; ok {
		ps.Path, ps.NAT, ps.History = pv.Path, pv.NAT.String(), pv.History
		ps.Probing, ps.PathMTU, ps.MTU = pv.Probing, pv.PathMTU, pv.MTU
		if pv.Route.IsValid() {
			ps.Endpoint = pv.Route.String()
		}
		ps.Reason, ps.Via = pv.Reason, pv.Via
		if pv.Heartbeat > 0 {
			ps.RTTMillis = float64(pv.RTT.Microseconds()) / 1000
			ps.KeepaliveSeconds = pv.Heartbeat.Seconds()
			*idle += 2 * float64(time.Minute) / float64(pv.Heartbeat)
		}
	} else if w.endpoint.IsValid() && !w.handshake.IsZero() {
		// A peer with a fixed Endpoint: plain WireGuard, no probes, so no RTT.
		ps.Path, ps.Endpoint = nat.KindOf(w.endpoint).String(), w.endpoint.String()
	}
	return ps
}

// policyStatus is the policy d as the filter f enforces it.
func policyStatus(d *cert.Document, f *policy.Filter) *PolicyStatus {
	ps := &PolicyStatus{Seq: d.Seq, Allowed: f.Allowed(), Dropped: filterDrops(f), Flows: f.Flows(),
		FlowsRefused: f.FlowsRefused(), FlowsEvicted: f.FlowsEvicted()}
	for _, r := range d.Rules {
		ps.Rules = append(ps.Rules, r.String())
	}
	return ps
}

// filterDrops are the filter's drops by reason.
func filterDrops(f *policy.Filter) map[string]uint64 {
	drops := map[string]uint64{}
	for i, name := range policy.DropNames {
		drops[name] = f.Dropped[i].Load()
	}
	return drops
}

// mode is "userspace" or "tun", as status says it.
func (t *Tunnel) mode() string {
	if t.user != nil {
		return "userspace"
	}
	return "tun"
}
