package names

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/config"
)

// fakeWriter is a dns.ResponseWriter that keeps what was written.
type fakeWriter struct {
	remote net.Addr
	msg    *dns.Msg
}

func (w *fakeWriter) LocalAddr() net.Addr       { return &net.UDPAddr{IP: net.IPv4(100, 64, 0, 1), Port: 53} }
func (w *fakeWriter) RemoteAddr() net.Addr      { return w.remote }
func (w *fakeWriter) WriteMsg(m *dns.Msg) error { w.msg = m; return nil }
func (w *fakeWriter) Write([]byte) (int, error) { return 0, nil }
func (w *fakeWriter) Close() error              { return nil }
func (w *fakeWriter) TsigStatus() error         { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)       {}
func (w *fakeWriter) Hijack()                   {}
func (w *fakeWriter) Network() string           { return "udp" }

func namesConfig(t *testing.T) *config.Config {
	t.Helper()
	priv, _ := key.NewPrivate()
	peer, _ := key.NewPrivate()
	conf := "[Interface]\nPrivateKey = " + priv.Encode() + "\nAddress = 100.64.0.1/24\nDomain = Punch\nName = alice\n" +
		"[Peer]\nName = Bob\nPublicKey = " + peer.Public().String() + "\nAllowedIPs = 100.64.0.2/32, fd00::2/128, 10.77.0.0/24\nEndpoint = 192.0.2.1:51820\n"
	cfg, err := config.Parse("names.conf", strings.NewReader(conf))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func ask(ns *Server, from, name string, qtype uint16) *dns.Msg {
	w := &fakeWriter{remote: net.UDPAddrFromAddrPort(netip.MustParseAddrPort(from))}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	ns.ServeDNS(w, m)
	return w.msg
}

func TestNamesAnswered(t *testing.T) {
	ns := &Server{Resolver: NewResolver(namesConfig(t), nil), log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		from, name string
		qtype      uint16
		want       string // the answer's address; "" for none
		rcode      int
	}{
		{"100.64.0.2:5353", "bob.punch.", dns.TypeA, "100.64.0.2", dns.RcodeSuccess},
		{"100.64.0.1:5353", "BOB.Punch.", dns.TypeAAAA, "fd00::2", dns.RcodeSuccess},
		{"10.77.0.9:5353", "alice.punch.", dns.TypeA, "100.64.0.1", dns.RcodeSuccess},
		{"100.64.0.2:5353", "alice.punch.", dns.TypeAAAA, "", dns.RcodeSuccess},
		{"100.64.0.2:5353", "carol.punch.", dns.TypeA, "", dns.RcodeNameError},
	} {
		m := ask(ns, tc.from, tc.name, tc.qtype)
		if m == nil || m.Rcode != tc.rcode {
			t.Errorf("%s %s from %s: %v, want rcode %d", tc.name, dns.TypeToString[tc.qtype], tc.from, m, tc.rcode)
			continue
		}
		got := ""
		if len(m.Answer) == 1 {
			switch rr := m.Answer[0].(type) {
			case *dns.A:
				got = rr.A.String()
			case *dns.AAAA:
				got = rr.AAAA.String()
			}
		}
		if got != tc.want || len(m.Answer) > 1 {
			t.Errorf("%s %s: answer %v, want %q", tc.name, dns.TypeToString[tc.qtype], m.Answer, tc.want)
		}
	}
	// A stranger — not us, not a peer — gets nothing at all.
	if m := ask(ns, "192.168.1.3:5353", "bob.punch.", dns.TypeA); m != nil {
		t.Errorf("a stranger got an answer: %v", m)
	}
}

func TestNamesForwarded(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(203, 0, 113, 99)})
		w.WriteMsg(m)
	})}
	go up.ActivateAndServe()
	defer up.Shutdown()
	ns := &Server{Resolver: NewResolver(namesConfig(t), nil), log: slog.New(slog.DiscardHandler), upstream: []string{pc.LocalAddr().String()}}
	m := ask(ns, "100.64.0.2:5353", "upstream.example.", dns.TypeA)
	if m == nil || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "203.0.113.99" {
		t.Fatalf("forwarded answer: %v", m)
	}
	// No upstream: SERVFAIL, not silence.
	ns.upstream = nil
	if m := ask(ns, "100.64.0.2:5353", "upstream.example.", dns.TypeA); m == nil || m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("without upstream: %v", m)
	}
}
