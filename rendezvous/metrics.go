package rendezvous

import (
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// Collector exports a Server's counters as Prometheus metrics. It reads
// Stats and Registered when scraped, so the server keeps one set of books
// and `kill -USR1` and /metrics always agree.
type Collector struct {
	s                        *Server
	peers, members, networks *prometheus.Desc
	refused                  *prometheus.Desc
	stats                    []statMetric
}

// statMetric is one counter of Stats and the metric it is exported as.
type statMetric struct {
	field  int
	desc   *prometheus.Desc
	labels []string
}

// statNames are the metrics of the Stats counters that are not drops.
// Every Drop* counter is a reason of punchtun_rendezvous_dropped_packets_total.
var statNames = map[string]struct{ name, help string }{
	"STUN":             {"stun_requests_total", "STUN binding requests answered."},
	"Registrations":    {"registrations_total", "Registrations and refreshes accepted."},
	"Introductions":    {"introductions_total", "Pairs of peers introduced to each other."},
	"RelayPackets":     {"relayed_packets_total", "WireGuard packets relayed between peers."},
	"RelayBytes":       {"relayed_bytes_total", "WireGuard bytes relayed between peers, without the relay header."},
	"TURNOffers":       {"turn_offers_total", "TURN credentials handed out."},
	"RelayedAddresses": {"relayed_addresses_total", "TURN relayed addresses passed from one peer of a pair to the other."},
	"Lookups":          {"lookups_total", "Members' lookups of other members answered (introduced or missed)."},
	"LookupMisses":     {"lookup_misses_total", "Lookups that no registered member of the asker's network held."},
	"Documents":        {"documents_total", "Networks' documents (policies, revocations) taken from members and sent on."},
	"DocumentsRefused": {"documents_refused_total", "Documents refused: not signed by the network key, or not the publisher's network."},
	"DocumentsRateLimited": {"documents_rate_limited_total",
		"New documents kept but past their network's publication rate (1/s, burst 10): not fanned out now; members get them by their registrations' summaries."},
	"DocumentsOverBudget": {"documents_over_budget_total",
		"Documents past their network's byte budget, not kept; a revocation among them is acted on and sent to the members all the same."},
	"DocumentNetworksPruned": {"document_networks_pruned_total", "Networks whose documents were forgotten after 24 h without a registered member."},
	"DocumentsSent":          {"documents_sent_total", "Document messages sent to members, first sends and sends again until the member shows it holds them."},
	"DocumentBytes":          {"document_bytes_total", "Bytes of the Document messages sent to members (paced per network)."},
	"DocumentsPostponed": {"documents_postponed_total",
		"Documents held back by a member's full queue or its address's send budget, sent again later."},
}

// NewCollector returns a Collector of s. Register it with a
// prometheus.Registry.
func NewCollector(s *Server) *Collector {
	const ns, sub = "punchtun", "rendezvous"
	c := &Collector{
		s:        s,
		peers:    prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "registered_peers"), "Peers registered now.", nil, nil),
		members:  prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "members"), "Peers registered now as members of a network.", nil, nil),
		networks: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "networks"), "Networks with a member registered now.", nil, nil),
		refused: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "member_refusals_total"),
			"Members' certificates refused, by reason: bad-signature, other-network, expired, not-yet-valid, key-mismatch, overlap, malformed, network-full, revoked, retired, superseded.",
			[]string{"reason"}, nil),
	}
	dropped := prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "dropped_packets_total"),
		"Packets dropped, by reason: malformed, auth (failed authentication), replay, unregistered (sender not registered), "+
			"not_mutual (peers that do not both list each other), relay_off, rate_limited (over a source's, a key's or the new-key rate), "+
			"too_many (peer or replay table full), oversize, tcp_queue_full (a TCP peer that does not read its stream).",
		[]string{"reason"}, nil)
	// Every counter of Stats is exported, including ones added after this
	// was written: those under a name derived from the field's.
	t := reflect.TypeFor[Stats]()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type != reflect.TypeFor[atomic.Uint64]() {
			continue
		}
		switch n, ok := statNames[f.Name]; {
		case ok:
			c.stats = append(c.stats, statMetric{field: i, desc: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, n.name), n.help, nil, nil)})
		case strings.HasPrefix(f.Name, "Drop"):
			c.stats = append(c.stats, statMetric{field: i, desc: dropped, labels: []string{snake(strings.TrimPrefix(f.Name, "Drop"))}})
		default:
			c.stats = append(c.stats, statMetric{field: i, desc: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, snake(f.Name)+"_total"),
				"The rendezvous's "+f.Name+" counter.", nil, nil)})
		}
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.peers
	ch <- c.members
	ch <- c.networks
	ch <- c.refused
	seen := make(map[*prometheus.Desc]bool)
	for _, m := range c.stats {
		if !seen[m.desc] {
			seen[m.desc] = true
			ch <- m.desc
		}
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(c.s.Registered()))
	members, networks := c.s.Members()
	ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(members))
	ch <- prometheus.MustNewConstMetric(c.networks, prometheus.GaugeValue, float64(networks))
	for r := cert.Reason(1); r < cert.NumReasons; r++ {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(c.s.Stats.Refused[r].Load()), r.String())
	}
	v := reflect.ValueOf(&c.s.Stats).Elem()
	for _, m := range c.stats {
		n := v.Field(m.field).Addr().Interface().(*atomic.Uint64).Load()
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(n), m.labels...)
	}
}
