package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// addMetricsFlag adds --metrics, the address to serve Prometheus metrics on.
func addMetricsFlag(fs *flag.FlagSet, example string) *string {
	return fs.String("metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics, e.g. "+example+" (default: off)")
}

// metricsServer serves /metrics over HTTP.
type metricsServer struct {
	ln  net.Listener
	srv *http.Server
}

// listenMetrics opens addr, or returns nil for "". It is called before
// anything else is set up, so that a busy or mistyped address fails the
// command at once, leaving nothing behind.
func listenMetrics(addr string) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	return &metricsServer{ln: ln}, nil
}

// serve serves cs, and the Go runtime's and the process's metrics, until
// close. A nil m serves nothing.
func (m *metricsServer) serve(log *slog.Logger, cs ...prometheus.Collector) {
	if m == nil {
		return
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cs...)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: promLogger{log}}))
	if os.Getenv("PUNCHTUN_PPROF") == "1" {
		// Go's profiles, for measuring (scripts/bench.sh's profiles):
		// opt-in, since a profile costs CPU and shows internals.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		log.Info("serving Go profiles at /debug/pprof/ (PUNCHTUN_PPROF=1)")
	}
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("serving metrics", "addr", m.ln.Addr().String())
	go func() {
		if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
}

// close stops serving. A nil m does nothing.
func (m *metricsServer) close() {
	switch {
	case m == nil:
	case m.srv != nil:
		m.srv.Close() // closes the listener too
	default:
		m.ln.Close()
	}
}

// promLogger logs promhttp's errors (a collector that failed) as warnings.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) { l.log.Warn("metrics: " + fmt.Sprint(v...)) }
