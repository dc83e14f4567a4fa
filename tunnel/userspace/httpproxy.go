package userspace

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"time"
)

// HTTPProxy is an HTTP proxy into the tunnel: CONNECT joins the client to
// host:port; a plain request with an absolute URL is sent on and its
// response returned.
type HTTPProxy struct {
	log  *slog.Logger
	dial *Dialer
	srv  *http.Server
	done chan struct{}
	ln   net.Listener
	// hijacked holds the CONNECT tunnels.
	hijacked group
	// transport carries plain requests, dialing through the tunnel.
	transport *http.Transport
}

// ServeHTTPProxy serves the proxy on ln until Close.
func ServeHTTPProxy(log *slog.Logger, ln net.Listener, d *Dialer) *HTTPProxy {
	p := &HTTPProxy{log: log, dial: d, ln: ln, done: make(chan struct{})}
	p.transport = &http.Transport{DialContext: d.Dial, MaxIdleConns: 16, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: false}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: negotiationTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() {
		defer close(p.done)
		p.srv.Serve(ln)
	}()
	return p
}

// Addr is where it listens.
func (p *HTTPProxy) Addr() net.Addr { return p.ln.Addr() }

// Close stops serving and ends every connection, tunnelled ones too.
func (p *HTTPProxy) Close() {
	p.srv.Close()
	<-p.done
	p.hijacked.close()
	p.transport.CloseIdleConnections()
}

func (p *HTTPProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" {
		http.Error(w, "this is a proxy: ask for an absolute http:// URL, or CONNECT host:port", http.StatusBadRequest)
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.Out.URL = pr.In.URL; pr.Out.Host = pr.In.Host },
		Transport: p.transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.log.Debug("HTTP proxy: request failed", "url", r.URL, "err", err)
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}

// connect joins the client to r.Host through the tunnel. The connection
// is hijacked, out of http.Server's hands: Close ends it through hijacked.
func (p *HTTPProxy) connect(w http.ResponseWriter, r *http.Request) {
	up, err := p.dial.Dial(r.Context(), "tcp", r.Host)
	if err != nil {
		p.log.Debug("HTTP proxy: CONNECT failed", "destination", r.Host, "err", err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	c.SetDeadline(time.Time{})
	if _, err := rw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n"); err != nil || rw.Flush() != nil {
		c.Close()
		up.Close()
		return
	}
	if !p.hijacked.goWith(c, func() { Splice(&bufferedConn{Conn: c, r: rw.Reader}, up) }) {
		up.Close()
	}
}
