package userspace_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// End-to-end tests as any user: userspace peers on loopback, reached
// through their proxies, punchtun nc and forwards.

// pair brings up alice and bob, static peers of each other found
// through the rendezvous, each forwarding tcp:7 to an echo server here.
func pair(t *testing.T) (h *harness, alice, bob *peer) {
	h = newHarness(t)
	alicePriv, alicePub := h.genkey()
	bobPriv, bobPub := h.genkey()
	echo := echoServer(t)
	alice = h.up("alice", h.peerConfig(alicePriv, fmt.Sprintf("Address = 100.64.0.1/24\nDomain = punch\nName = alice\nForward = tcp:7=127.0.0.1:%d\n"+
		"[Peer]\nName = bob\nPublicKey = %s\nAllowedIPs = 100.64.0.2/32\n", echo, bobPub)))
	bob = h.up("bob", h.peerConfig(bobPriv, fmt.Sprintf("Address = 100.64.0.2/24\nName = bob\nForward = tcp:7=127.0.0.1:%d\n"+
		"[Peer]\nName = alice\nPublicKey = %s\nAllowedIPs = 100.64.0.1/32\n", echo, alicePub)))
	alice.waitPath("bob", direct, 20*time.Second)
	bob.waitPath("alice", direct, 20*time.Second)
	return h, alice, bob
}

// socksDial connects through p's SOCKS5 proxy to addr.
func socksDial(t *testing.T, p *peer, addr string) net.Conn {
	t.Helper()
	d, err := proxy.SOCKS5("tcp", p.socks, nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("SOCKS5 through %s to %s: %v", p.iface, addr, err)
	}
	return c
}

// echoed sends n random bytes over c and checks that they come back
// intact: data both ways through the tunnel.
func echoed(t *testing.T, c net.Conn, n int) {
	t.Helper()
	defer c.Close()
	data := make([]byte, n)
	rand.Read(data)
	go func() {
		c.Write(data)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("echo of %d bytes: got %d bytes back, intact %v, err %v", n, len(got), bytes.Equal(got, data), err)
	}
}

func TestRootlessPair(t *testing.T) {
	h, alice, bob := pair(t)

	st, err := alice.status()
	if err != nil || st.Mode != "userspace" || st.SOCKS5 != alice.socks || st.HTTPProxy != alice.httpProxy || len(st.Forwards) != 1 || !strings.HasPrefix(st.Forwards[0], "tcp:7=") {
		t.Errorf("status of a userspace interface: %+v, %v", st, err)
	}
	if st.StackDropped == nil {
		t.Error("status of a userspace interface lacks stack_dropped")
	}
	out, _, _ := h.punchtun("", "status", "--run-dir", alice.runDir)
	if !strings.Contains(out, "mode userspace  socks5 "+alice.socks) {
		t.Errorf("status text lacks the mode and proxies:\n%s", out)
	}

	// 10 MiB each way, by address and by name (bare, and under Domain).
	start := time.Now()
	echoed(t, socksDial(t, alice, "100.64.0.2:7"), 10<<20)
	t.Logf("10 MiB each way alice → bob's echo through SOCKS5: %v", time.Since(start).Round(time.Millisecond))
	echoed(t, socksDial(t, bob, "alice:7"), 10<<20)
	echoed(t, socksDial(t, alice, "bob.punch:7"), 1<<10)
	echoed(t, socksDial(t, alice, "bob:7"), 1<<10)

	// The HTTP proxy: a plain request to a forwarded web server, and CONNECT.
	web := webServer(t, "hello from bob")
	bob.stop()
	bob.extraFlags = []string{"--forward", fmt.Sprintf("tcp:80=127.0.0.1:%d", web)}
	bob.start()
	alice.waitPath("bob", direct, 20*time.Second)
	proxyURL, _ := url.Parse("http://" + alice.httpProxy)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 20 * time.Second}
	resp, err := client.Get("http://bob.punch/")
	if err != nil {
		t.Fatalf("GET through the HTTP proxy: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello from bob" {
		t.Errorf("GET through the HTTP proxy: %d %q", resp.StatusCode, body)
	}
	echoed(t, httpConnect(t, alice, "bob.punch:7"), 1<<20)
	// A name no peer has is refused at once, not dialled.
	if resp, err := client.Get("http://carol.punch/"); err == nil && resp.StatusCode == 200 {
		t.Error("a name no peer has was served")
	}

	// After bob's restart (above) the data flows again: that was a peer restart.
	echoed(t, socksDial(t, alice, "bob:7"), 1<<20)
}

// webServer serves body on loopback until the test ends.
func webServer(t *testing.T, body string) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// httpConnect opens a CONNECT tunnel to addr through p's HTTP proxy.
func httpConnect(t *testing.T, p *peer, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.httpProxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	// Byte by byte up to the blank line: what follows is the tunnel's.
	var head []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := c.Read(b); err != nil {
			t.Fatalf("CONNECT %s: %v (%q)", addr, err, head)
		}
		head = append(head, b[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200")) {
		t.Fatalf("CONNECT %s: %q", addr, head)
	}
	c.SetReadDeadline(time.Time{})
	return c
}
