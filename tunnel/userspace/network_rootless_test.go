package userspace_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// A network of userspace members: members found on demand by name
// through the proxy, the policy enforced on what reaches a forward, a
// revocation.

const clientsToServers = "[Rule]\nFrom = group:clients\nTo = group:servers\nAllow = tcp/7, icmp\n"

// signed runs a `punchtun network` signing command and keeps its output
// in a file of dir, whose path it returns.
func (h *harness) signed(name string, args ...string) string {
	h.t.Helper()
	return h.signing(name, args...)()
}

// signing starts signed's command; wait waits for it and returns the
// file's path. `network sign` waits out its second: signings that need no
// order among them wait it out together.
func (h *harness) signing(name string, args ...string) (wait func() string) {
	run := h.punchtunStart("", append([]string{"network"}, args...)...)
	var once sync.Once
	var out, errOut string
	var err error
	ran := func() { once.Do(func() { out, errOut, err = run() }) }
	h.t.Cleanup(ran) // reaped also when the test ends before it waits
	return func() string {
		h.t.Helper()
		ran()
		if err != nil {
			h.t.Fatalf("punchtun network %v: %v: %s", args, err, errOut)
		}
		path := filepath.Join(h.dir, name)
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			h.t.Fatal(err)
		}
		return path
	}
}

// networkKey makes a network key: the file it is in and its public key.
func (h *harness) networkKey() (keyFile, pub string) {
	h.t.Helper()
	keyFile = h.signed("net.key", "new")
	os.Chmod(keyFile, 0o600)
	pub, _, err := h.punchtun(readFile(h.t, keyFile), "network", "pub")
	if err != nil {
		h.t.Fatal(err)
	}
	return keyFile, strings.TrimSpace(pub)
}

// memberConfig is the config of a member of network netPub by the
// certificate in certFile, with more lines (keys of [Interface]).
func (h *harness) memberConfig(priv, netPub, certFile, more string) string {
	return h.peerConfig(priv, fmt.Sprintf("Network = %s\nCertificateFile = %s\n%s", netPub, certFile, more))
}

// publish hands doc (a policy or a revocation) to p's network with
// `punchtun network publish`.
func (p *peer) publish(doc string) {
	p.h.t.Helper()
	if out, errOut, err := p.h.punchtun("", "network", "publish", "--run-dir", p.runDir, p.iface, doc); err != nil {
		p.h.t.Fatalf("publish %s on %s: %v: %s %s", doc, p.iface, err, out, errOut)
	}
}

func TestRootlessNetwork(t *testing.T) {
	h := newHarness(t)
	netKey, netPub := h.networkKey()
	policy := filepath.Join(h.dir, "rules.ini")
	os.WriteFile(policy, []byte(clientsToServers), 0o644)
	p100 := h.signed("p100", "policy", "--key", netKey, "--seq", "100", policy)
	echo := echoServer(t)

	members := map[string]*peer{}
	pubs := map[string]string{}
	for i, m := range []struct{ name, group, extra string }{
		{"m1", "clients", "Policy = " + p100 + "\n"}, {"m2", "servers", ""}, {"m3", "servers", ""},
	} {
		priv, pub := h.genkey()
		pubs[m.name] = pub
		cert := h.signed(m.name+".cert", "sign", "--key", netKey, "--name", m.name, "--address", fmt.Sprintf("100.64.1.%d/24", i+1), "--group", m.group, pub)
		conf := h.memberConfig(priv, netPub, cert, fmt.Sprintf("Domain = net\nForward = tcp:7=127.0.0.1:%d\n%s", echo, m.extra))
		members[m.name] = h.up(m.name, conf)
	}
	m1, m2 := members["m1"], members["m2"]
	eventually(t, 15*time.Second, "every member enforces policy 100", func() error {
		for _, m := range members {
			st, err := m.status()
			if err != nil || st.Network == nil || st.Network.Policy == nil || st.Network.Policy.Seq != 100 {
				return fmt.Errorf("%s: %+v %v", m.iface, st, err)
			}
		}
		return nil
	})

	// m3 is found by name, on demand: nothing was sent to it before.
	if st, _ := m1.status(); st.Network.Members != 0 {
		t.Fatalf("m1 knows %d members before any lookup", st.Network.Members)
	}
	echoed(t, socksDial(t, m1, "m3.net:7"), 1<<20)
	m1.waitPath("m3", direct, 10*time.Second)
	// m2 by its address: the first packet is held until the lookup found
	// m2, then goes at once, not with TCP's retry a second later.
	start := time.Now()
	c := httpConnect(t, m1, "100.64.1.2:7")
	t.Logf("first connection to m2 by its address, open after %v", time.Since(start).Round(time.Millisecond))
	echoed(t, c, 1<<10)
	echoed(t, httpConnect(t, m1, "m2.net:7"), 1<<10)

	// The policy: a client reaches servers' forwards; a server reaches
	// no client, and no other server.
	if c, err := socksTry(m2, "m1.net:7", 3*time.Second); err == nil {
		c.Close()
		t.Error("a server reached a client's forward")
	}
	if c, err := socksTry(m2, "m3.net:7", 3*time.Second); err == nil {
		c.Close()
		t.Error("a server reached another server's forward")
	}
	eventually(t, 5*time.Second, "m1 counts the dropped connection", func() error {
		st, err := m1.status()
		if err != nil || st.Network.Policy.Dropped["no-rule"] == 0 {
			return fmt.Errorf("%+v %v", st, err)
		}
		return nil
	})

	// m3 revoked: published on m2, everyone lets it go.
	rev := h.signed("rev-m3", "revoke", "--key", netKey, pubs["m3"])
	m2.publish(rev)
	eventually(t, 15*time.Second, "m1 holds the revocation", func() error {
		st, err := m1.status()
		if err != nil || st.Network.RevokedKeys != 1 {
			return fmt.Errorf("%+v %v", st, err)
		}
		return nil
	})
	if c, err := socksTry(m1, "m3.net:7", 3*time.Second); err == nil {
		c.Close()
		t.Error("m1 still reaches the revoked m3")
	}
	echoed(t, socksDial(t, m1, "m2.net:7"), 1<<10)
}

// socksTry connects through p's SOCKS5 proxy to addr, giving up after
// within: a flow the policy drops is never answered, and on loopback an
// allowed one is answered in milliseconds.
func socksTry(p *peer, addr string, within time.Duration) (net.Conn, error) {
	d, err := proxy.SOCKS5("tcp", p.socks, nil, proxy.Direct)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return d.(proxy.ContextDialer).DialContext(ctx, "tcp", addr)
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
