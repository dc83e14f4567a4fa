package tunnel

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a Tunnel's Status as Prometheus metrics. It takes the
// Status when scraped — the same view `punchtun status` and `wg show`
// have — so it keeps no counters of its own.
type Collector struct {
	t *Tunnel

	natMapping, registered, relayed               *prometheus.Desc
	path, peerNAT, handshake, rx, tx, rtt, status *prometheus.Desc
	members, refusals, certLeft                   *prometheus.Desc
	policySeq, policyDropped, revokedKeys         *prometheus.Desc
	gossipDropped, portMappings, stackDropped     *prometheus.Desc
	stackICMPRefused                              *prometheus.Desc
}

// NewCollector returns a Collector of t. Register it with a
// prometheus.Registry.
func NewCollector(t *Tunnel) *Collector {
	peer := []string{"interface", "public_key", "name"}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("punchtun_"+name, help, labels, nil)
	}
	return &Collector{
		t:          t,
		natMapping: desc("interface_nat_mapping", "1 for this interface's NAT mapping: none, easy, hard, udp-blocked or unknown.", "interface", "mapping"),
		registered: desc("interface_rendezvous_registered", "1 while registered with the rendezvous, 0 while not.", "interface", "rendezvous"),
		relayed: desc("interface_relayed_bytes_total", "WireGuard bytes relayed, by relay (rendezvous, rendezvous-tcp, turn) and direction (tx, rx).",
			"interface", "relay", "direction"),
		path: desc("peer_path", "1 for the path to the peer now: connecting, direct, lan, relay or relay-tcp.",
			append(peer, "path")...),
		peerNAT:   desc("peer_nat_mapping", "1 for the NAT mapping the peer reported.", append(peer, "mapping")...),
		handshake: desc("peer_last_handshake_seconds", "Unix time of the last WireGuard handshake with the peer; 0 if none yet.", peer...),
		rx:        desc("peer_receive_bytes_total", "Bytes received from the peer, as WireGuard counts them.", peer...),
		tx:        desc("peer_transmit_bytes_total", "Bytes sent to the peer, as WireGuard counts them.", peer...),
		rtt:       desc("peer_rtt_seconds", "Round-trip time of the path's probes; absent while unknown (relayed or fixed-endpoint peers).", peer...),
		status:    desc("interface_up", "1 if the interface's status could be read; 0, and no other series, if not.", "interface"),
		members:   desc("interface_members", "Members of the network in WireGuard now (found on demand).", "interface"),
		refusals: desc("interface_member_refusals_total", "Members refused by this interface, by reason: bad-signature, other-network, expired, not-yet-valid, key-mismatch, overlap, malformed.",
			"interface", "reason"),
		certLeft:  desc("interface_certificate_seconds_left", "Seconds until this member's certificate expires (negative once it has).", "interface"),
		policySeq: desc("interface_policy_seq", "The seq of the network policy this member enforces (absent: none).", "interface"),
		policyDropped: desc("interface_policy_dropped_total", "Packets from members the filter dropped, by reason: no-rule, malformed, destination (policy or not).",
			"interface", "reason"),
		revokedKeys: desc("interface_revoked_keys", "Member keys the network's revocations held here revoke.", "interface"),
		gossipDropped: desc("interface_gossip_dropped_total", "Members' in-tunnel gossip dropped, by reason: limited (over a member's budget), junk (malformed, or not of this network).",
			"interface", "reason"),
		portMappings: desc("interface_port_mappings_total", "Asks of the router for a port forward, by protocol (natpmp, pcp, upnp) and outcome: mapped, renewed, refused, no_answer, failed, double_nat (mapped behind a second NAT, not offered).",
			"interface", "protocol", "outcome"),
		stackDropped:     desc("interface_stack_dropped_total", "In userspace mode, packets the in-process stack and the tunnel could not take from each other: malformed, or over the MTU.", "interface"),
		stackICMPRefused: desc("interface_stack_icmp_refused_total", "In userspace mode, ICMP errors dropped for naming a connection to another peer than the one that sent them (also in stack_dropped).", "interface"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.natMapping, c.registered, c.relayed, c.path, c.peerNAT, c.handshake, c.rx, c.tx, c.rtt, c.status,
		c.members, c.refusals, c.certLeft, c.policySeq, c.policyDropped, c.revokedKeys, c.gossipDropped, c.portMappings, c.stackDropped, c.stackICMPRefused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st, err := c.t.Status()
	if err != nil {
		// The device is going away; say so rather than fail the scrape of
		// the process's other metrics.
		gauge(c.status, 0, c.t.name)
		return
	}
	gauge(c.status, 1, st.Interface)
	gauge(c.natMapping, 1, st.Interface, st.NAT)
	for _, r := range st.Rendezvous {
		v := 0.0
		if r.Registered {
			v = 1
		}
		gauge(c.registered, v, st.Interface, r.Address)
	}
	for relay, n := range st.RelayedBytes {
		ch <- prometheus.MustNewConstMetric(c.relayed, prometheus.CounterValue, float64(n.Tx), st.Interface, relay, "tx")
		ch <- prometheus.MustNewConstMetric(c.relayed, prometheus.CounterValue, float64(n.Rx), st.Interface, relay, "rx")
	}
	for proto, byOutcome := range st.PortMapping.Outcomes {
		for outcome, n := range byOutcome {
			ch <- prometheus.MustNewConstMetric(c.portMappings, prometheus.CounterValue, float64(n), st.Interface, proto, outcome)
		}
	}
	if st.StackDropped != nil {
		ch <- prometheus.MustNewConstMetric(c.stackDropped, prometheus.CounterValue, float64(*st.StackDropped), st.Interface)
	}
	if st.StackICMPRefused != nil {
		ch <- prometheus.MustNewConstMetric(c.stackICMPRefused, prometheus.CounterValue, float64(*st.StackICMPRefused), st.Interface)
	}
	if n := st.Network; n != nil {
		gauge(c.members, float64(n.Members), st.Interface)
		for reason, count := range n.Refusals {
			ch <- prometheus.MustNewConstMetric(c.refusals, prometheus.CounterValue, float64(count), st.Interface, reason)
		}
		if until, err := time.Parse(time.RFC3339, n.ValidUntil); err == nil {
			gauge(c.certLeft, time.Until(until).Seconds(), st.Interface)
		}
		gauge(c.revokedKeys, float64(n.RevokedKeys), st.Interface)
		for reason, count := range n.GossipDropped {
			ch <- prometheus.MustNewConstMetric(c.gossipDropped, prometheus.CounterValue, float64(count), st.Interface, reason)
		}
		if p := n.Policy; p != nil {
			gauge(c.policySeq, float64(p.Seq), st.Interface)
		}
		for reason, count := range n.Filtered {
			ch <- prometheus.MustNewConstMetric(c.policyDropped, prometheus.CounterValue, float64(count), st.Interface, reason)
		}
	}
	for _, p := range st.Peers {
		labels := []string{st.Interface, p.PublicKey, p.Name}
		gauge(c.path, 1, append(labels, p.Path)...)
		if p.NAT != "" {
			gauge(c.peerNAT, 1, append(labels, p.NAT)...)
		}
		var hs float64
		if t, err := time.Parse(time.RFC3339, p.LastHandshake); err == nil {
			hs = float64(t.Unix())
		}
		gauge(c.handshake, hs, labels...)
		ch <- prometheus.MustNewConstMetric(c.rx, prometheus.CounterValue, float64(p.RxBytes), labels...)
		ch <- prometheus.MustNewConstMetric(c.tx, prometheus.CounterValue, float64(p.TxBytes), labels...)
		if p.RTTMillis > 0 {
			gauge(c.rtt, p.RTTMillis/1000, labels...)
		}
	}
}
