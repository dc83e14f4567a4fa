package rendezvous

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// scrapeMetrics fetches url over HTTP and parses the text exposition
// format into "name{label=value,...}" → value.
func scrapeMetrics(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, res.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	out := make(map[string]float64)
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			out[key] = sampleValue(f.GetType(), m)
		}
	}
	return out
}

func sampleValue(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	}
	return m.GetUntyped().GetValue()
}

// scrapeUntil scrapes until every metric in want has its value, and
// returns the last scrape. Packets are handled asynchronously, so counters
// of what the server dropped, which no answer confirms, need the wait.
func scrapeUntil(t *testing.T, url string, want map[string]float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := scrapeMetrics(t, url)
		var wrong []string
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				wrong = append(wrong, fmt.Sprintf("%s = %v (present %v), want %v", k, g, ok, v))
			}
		}
		if len(wrong) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics not within 5s:\n%s", strings.Join(wrong, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMetrics drives a real server — registrations, an introduction, a
// relayed packet, STUN, and packets it must drop — and checks what
// /metrics says over HTTP.
func TestMetrics(t *testing.T) {
	s, srv, sk := startServer(t)
	reg := prometheus.NewPedanticRegistry() // also checks Describe against Collect
	reg.MustRegister(NewCollector(s))
	hs := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer hs.Close()
	url := hs.URL + "/metrics"

	// Nothing has happened: every series is there, at zero.
	got := scrapeMetrics(t, url)
	zero := map[string]float64{
		"punchtun_rendezvous_registered_peers":                           0,
		"punchtun_rendezvous_introductions_total":                        0,
		"punchtun_rendezvous_relayed_packets_total":                      0,
		"punchtun_rendezvous_relayed_bytes_total":                        0,
		"punchtun_rendezvous_dropped_packets_total{reason=rate_limited}": 0,
		"punchtun_rendezvous_dropped_packets_total{reason=unregistered}": 0,
		"punchtun_rendezvous_dropped_packets_total{reason=not_mutual}":   0,
		"punchtun_rendezvous_dropped_packets_total{reason=replay}":       0,
		"punchtun_rendezvous_dropped_packets_total{reason=auth}":         0,
		"punchtun_rendezvous_dropped_packets_total{reason=malformed}":    0,
		"punchtun_rendezvous_stun_requests_total":                        0,
		"punchtun_rendezvous_registrations_total":                        0,
	}
	for k, v := range zero {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("before any traffic: %s = %v (present %v)", k, g, ok)
		}
	}
	// One series per counter of Stats, one per refusal reason, and the
	// gauges (registered peers, members, networks): nothing left out.
	want := 3 + int(cert.NumReasons) - 1
	for f := range reflect.TypeFor[Stats]().Fields() {
		if f.Type == reflect.TypeFor[atomic.Uint64]() {
			want++
		}
	}
	if n := len(got); n != want {
		t.Errorf("%d series, want %d (one per Stats counter and refusal reason, and the gauges):\n%v", n, want, got)
	}

	a, b, eve := newClient(t, srv, sk), newClient(t, srv, sk), newClient(t, srv, sk)
	a.register(b.pub())
	b.register(a.pub())
	a.expectIntro(b.pub(), b.addr())
	pkt := []byte{4, 0, 0, 0, 1, 2, 3, 4, 5, 6}
	a.sendRaw(wire.AppendRelay(nil, b.pub(), pkt))
	if _, _, ok := b.recvRelay(2 * time.Second); !ok {
		t.Fatal("no relayed packet")
	}
	_, req := nat.NewBindingRequest()
	eve.sendRaw(req)
	buf := make([]byte, 1500)
	eve.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, _, err := eve.conn.ReadFromUDPAddrPort(buf); err != nil || !nat.IsSTUN(buf[:n]) {
		t.Fatalf("no STUN answer: %v", err)
	}
	eve.sendRaw(wire.AppendRelay(nil, b.pub(), pkt)) // eve is not registered
	replay := a.seal(&wire.Register{Time: a.now(), Wants: nil})
	a.sendRaw(replay)
	a.sendRaw(replay)

	scrapeUntil(t, url, map[string]float64{
		"punchtun_rendezvous_registered_peers":                           2,
		"punchtun_rendezvous_introductions_total":                        1,
		"punchtun_rendezvous_relayed_packets_total":                      1,
		"punchtun_rendezvous_relayed_bytes_total":                        float64(len(pkt)),
		"punchtun_rendezvous_stun_requests_total":                        1,
		"punchtun_rendezvous_registrations_total":                        3,
		"punchtun_rendezvous_dropped_packets_total{reason=unregistered}": 1,
		"punchtun_rendezvous_dropped_packets_total{reason=replay}":       1,
		"punchtun_rendezvous_dropped_packets_total{reason=not_mutual}":   0,
	})

	// Read at scrape time: a third registration shows at once.
	eve.register()
	scrapeUntil(t, url, map[string]float64{"punchtun_rendezvous_registered_peers": 3})
}
