//go:build linux

package main

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"golang.zx2c4.com/wireguard/device"
)

// TestNATMatrix checks the path every kind of pair reaches, one lab per
// pair of router kinds: a1 and a2 sit behind router A, b1 behind router B,
// pub and rv on the public side (no NAT). Kinds: easy (endpoint-independent
// mapping), hard (a random port per destination), cone (easy plus a
// forwarded port 51820), blocked (no UDP out); same LAN is a1 with a2.
// TestTunnel covers easy/easy, none/easy and same LAN behind easy.
// scripts/natmatrix.sh runs this test and prints the table.
func TestNATMatrix(t *testing.T) {
	t.Parallel()
	const (
		noUDP    = "UDP blocked on this network"
		bothHard = "both NATs map per destination"
	)
	for _, lc := range []struct {
		prefix, natA, natB string
		cases              []pairCase
	}{
		{"pte", "easy", "hard", []pairCase{
			{name: "easy-hard", hostA: "a1", hostB: "b1", wantPath: "direct", repeat: true},
			{name: "none-none", hostA: "pub", hostB: "rv", wantPath: "direct"},
		}},
		{"pth", "hard", "hard", []pairCase{
			{name: "hard-hard", hostA: "a1", hostB: "b1", wantPath: "relay", wantReason: bothHard},
			{name: "none-hard", hostA: "pub", hostB: "b1", wantPath: "direct"},
			{name: "same-lan-hard", hostA: "a1", hostB: "a2", wantPath: "lan"},
		}},
		{"ptc", "cone", "hard", []pairCase{
			{name: "cone-hard", hostA: "a1", hostB: "b1", wantPath: "direct", portA: 51820},
			{name: "none-cone", hostA: "pub", hostB: "a1", wantPath: "direct", portB: 51820},
		}},
		{"ptec", "easy", "cone", []pairCase{
			{name: "easy-cone", hostA: "a1", hostB: "b1", wantPath: "direct", portB: 51820},
		}},
		{"ptcc", "cone", "cone", []pairCase{
			{name: "cone-cone", hostA: "a1", hostB: "b1", wantPath: "direct", portA: 51820, portB: 51820},
		}},
		{"ptk", "blocked", "easy", []pairCase{
			{name: "blocked-easy", hostA: "a1", hostB: "b1", wantPath: "relay-tcp", wantPathB: "relay", wantReason: noUDP},
			{name: "blocked-none", hostA: "a1", hostB: "pub", wantPath: "relay-tcp", wantPathB: "relay", wantReason: noUDP},
			{name: "same-lan-blocked", hostA: "a1", hostB: "a2", wantPath: "lan"},
		}},
		{"ptkh", "blocked", "hard", []pairCase{
			{name: "blocked-hard", hostA: "a1", hostB: "b1", wantPath: "relay-tcp", wantPathB: "relay", wantReason: noUDP},
		}},
		{"ptkc", "blocked", "cone", []pairCase{
			{name: "blocked-cone", hostA: "a1", hostB: "b1", wantPath: "relay-tcp", wantPathB: "relay", wantReason: noUDP, portB: 51820},
		}},
		{"ptkk", "blocked", "blocked", []pairCase{
			{name: "blocked-blocked", hostA: "a1", hostB: "b1", wantPath: "relay-tcp", wantReason: noUDP},
		}},
	} {
		t.Run(lc.natA+"-"+lc.natB, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, lc.prefix, lc.natA, lc.natB)
			runPairs(t, l, l.startRendezvous(), lc.cases)
		})
	}
}

// TestOneIPRendezvous: a rendezvous on a host with one public address
// listens on two of its ports. A NAT that maps per destination maps each
// port apart too, so peers still tell easy from hard, and an easy/hard pair
// still punches directly (birthday punching starts only when both NATs are
// known).
func TestOneIPRendezvous(t *testing.T) {
	t.Parallel()
	l := newLab(t, "pto", "easy", "hard")
	runPairs(t, l, l.startRendezvous("203.0.113.10:3479"), []pairCase{
		{name: "easy-hard-one-ip-rendezvous", hostA: "a1", hostB: "b1", wantPath: "direct"},
	})
}

// TestSimplestRendezvous: `punchtun rendezvous --listen 0.0.0.0:3478`, the
// first thing a user types, must tell easy NATs from hard ones (it listens
// on the next port too, and advertises it on the address each packet came
// to), so that an easy/hard pair is punched directly rather than relayed
// for good.
func TestSimplestRendezvous(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptz", "easy", "hard")
	rv := l.newRendezvous("rendezvous", rendezvousAddr, []string{"0.0.0.0:3478"}, "")
	for host, want := range map[string]string{"a1": "easy", "b1": "hard", "pub": "none"} {
		out := l.run(host, l.bin, "netcheck", "--rendezvous", rendezvousAddr, "--json")
		var res struct {
			Mapping string `json:"mapping"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Mapping != want {
			t.Errorf("netcheck from %s through a one-address rendezvous: mapping %q, want %q (%v)\n%s", host, res.Mapping, want, err, out)
		}
	}
	l.pair("ptza0", "a1", "ptzb0", "b1", "direct", rv)
}

// TestIPv6 puts global IPv6 addresses on every host, behind routers that
// route them without NAT but firewall what the LAN did not ask for: two
// peers whose IPv4 NATs both map per destination, which would be relayed,
// punch through the IPv6 firewalls instead and talk directly over IPv6.
func TestIPv6(t *testing.T) {
	t.Parallel()
	l := newLab(t, "pt6", "hard", "hard", "ipv6")
	runPairs(t, l, l.startRendezvous(), []pairCase{
		{name: "ipv6-behind-hard-nats", hostA: "a1", hostB: "b1", wantPath: "direct", wantEndpoint: "[2001:db8:b::2]:"},
	})
}

// TestPathChangeKeepsTCP cuts the direct path between two peers under a
// running TCP transfer and restores it: the tunnel falls back to the relay
// and returns to the direct path, and the transfer finishes intact, on the
// same connection.
func TestPathChangeKeepsTCP(t *testing.T) {
	t.Parallel()
	l := newLab(t, "ptp", "easy", "easy")
	rv := l.newRendezvous("rendezvous", rendezvousAddr, []string{rendezvousAddr, rendezvousAddr2}, "")
	a, b, _, _ := l.pair("ptpa0", "a1", "ptpb0", "b1", "direct", rv)

	// 12 MiB, sent in 100 KiB pieces ten times a second: the connection
	// lives through both path changes.
	data := make([]byte, 12<<20)
	rand.Read(data)
	src, dst := filepath.Join(l.dir, "send.bin"), filepath.Join(l.dir, "recv.bin")
	os.WriteFile(src, data, 0o600)
	listener := l.start(b.host, "nc-listen", "sh", "-c", "exec nc -l -s "+b.addr+" -p 9000 > "+dst)
	eventually(t, 10*time.Second, "nc listening", func() error {
		if out, _ := l.cmd(b.host, "ss", "-Hltn", "sport = :9000").Output(); !strings.Contains(string(out), "9000") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	sender := l.start(a.host, "nc-send", "sh", "-c",
		"for i in $(seq 0 122); do dd if="+src+" bs=102400 skip=$i count=1 status=none; sleep 0.1; done | nc -N "+b.addr+" 9000")
	received := func(min int64) func() error {
		return func() error {
			if fi, err := os.Stat(dst); err != nil || fi.Size() < min {
				return fmt.Errorf("not %d bytes yet", min)
			}
			return nil
		}
	}
	eventually(t, 10*time.Second, "first MiB", received(1<<20))

	// Cut UDP between the two NATs; the rendezvous stays reachable.
	cut := `table inet cut {
		chain f {
			type filter hook forward priority -5;
			ip daddr 203.0.113.22 meta l4proto udp drop
			ip saddr 203.0.113.22 meta l4proto udp drop
		}
	}`
	cutFile := filepath.Join(l.dir, "cut.nft")
	os.WriteFile(cutFile, []byte(cut+"\n"), 0o600)
	l.run("nata", "nft", "-f", cutFile)
	l.waitPath(a, "relay")
	l.waitPath(b, "relay")
	l.run("nata", "nft", "delete table inet cut")
	l.waitPath(a, "direct")
	l.waitPath(b, "direct")

	select {
	case <-sender.done:
	case <-time.After(60 * time.Second):
		t.Fatal("sender did not finish")
	}
	select {
	case <-listener.done:
	case <-time.After(30 * time.Second):
		t.Fatal("listener did not finish")
	}
	got, _ := os.ReadFile(dst)
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("received %d of %d bytes, or not the same ones", len(got), len(data))
	}
	st, err := l.status(a)
	if err != nil {
		t.Fatal(err)
	}
	var path []string
	for _, h := range st.Peers[0].History {
		path = append(path, h.To)
	}
	if !slices.Equal(path[len(path)-2:], []string{"relay", "direct"}) {
		t.Errorf("history %v does not end relay, direct", path)
	}
}

// TestQuietWhenIdle counts what an idle tunnel sends, on NAT A's router,
// for a minute after the path settled: per peer, the heartbeat probe and
// its answer every 25 s; to the rendezvous, the registration and its ack
// every 25 s. Nothing else: WireGuard's own keepalive and handshake timers
// have run out before the minute starts.
func TestQuietWhenIdle(t *testing.T) {
	t.Parallel()
	l := idleLab(t, "ptq", "easy", "easy")
	rv := l.newRendezvous("rendezvous", rendezvousAddr, []string{rendezvousAddr, rendezvousAddr2}, "")
	a, b, _, _ := l.pair("ptqa0", "a1", "ptqb0", "b1", "direct", rv)
	l.ping(a, b)
	// Idle means past every timer the last data set going: a peer checks
	// a path that falls silent for 10 s (tunnel.activeWindow); WireGuard
	// sends its keepalive 10 s after the last data it received and, if it
	// has heard nothing since the last data it sent, a new handshake up
	// to 15.334 s after. That can happen after the last answer came: its
	// sender notes the data sent only once the send returned, and on a
	// loaded machine the answer may be in first (then a handshake, its
	// copies, 3 packets or so each way, came inside the minute), and a
	// second more for the copy of each handshake message that punchtun
	// sends (tunnel/bind). The wait is that definition, not a guess at a
	// condition.
	time.Sleep(device.KeepaliveTimeout + device.RekeyTimeout + device.RekeyTimeoutJitterMaxMs*time.Millisecond + time.Second)
	// Count from when neither side probes any more.
	for _, p := range []*peerSpec{a, b} {
		eventually(t, 20*time.Second, p.iface+" done probing", func() error {
			st, err := l.status(p)
			if err != nil {
				return err
			}
			if st.Peers[0].Probing {
				return fmt.Errorf("still probing")
			}
			return nil
		})
	}

	counters := filepath.Join(l.dir, "count.nft")
	os.WriteFile(counters, []byte(`table inet count {
	counter to_peer {}
	counter from_peer {}
	counter to_rv {}
	counter from_rv {}
	counter keepalive_to_peer {}
	counter keepalive_from_peer {}
	set sizes_to_peer { type inet_service; size 64; flags dynamic; counter; }
	set sizes_from_peer { type inet_service; size 64; flags dynamic; counter; }
	chain f {
		type filter hook forward priority -5;
		ip daddr 203.0.113.22 update @sizes_to_peer { udp length }
		ip saddr 203.0.113.22 update @sizes_from_peer { udp length }
		ip daddr 203.0.113.22 counter name to_peer
		ip saddr 203.0.113.22 counter name from_peer
		ip daddr 203.0.113.22 udp length 40 counter name keepalive_to_peer
		ip saddr 203.0.113.22 udp length 40 counter name keepalive_from_peer
		ip daddr 203.0.113.10 counter name to_rv
		ip saddr 203.0.113.10 counter name from_rv
	}
}
`), 0o600)
	// The minute is in no quiet section: a light one held every other
	// test's heavy steps back for its length (a minute of both lab slots
	// idle), and it needs none. A heartbeat goes again only after a second
	// unanswered (nat.Punch), which a lab built beside does not cost, and
	// the spurious handshakes that load once caused come before the minute
	// (above). Beside lab builds, bulk transfers and two busy loops, 3 runs
	// of 3 counted 2 packets each way, as alone.
	l.run("nata", "nft", "-f", counters)
	time.Sleep(time.Minute)
	out := l.run("nata", "nft", "list", "counters", "table", "inet", "count")
	// By UDP length, to tell probes from answers (an answer is 18
	// bytes longer: it says where the probe came from).
	for _, set := range []string{"sizes_to_peer", "sizes_from_peer"} {
		list := l.run("nata", "nft", "list", "set", "inet", "count", set)
		if i := strings.Index(list, "elements = "); i >= 0 {
			list = list[i:]
		}
		t.Logf("%s: %s", set, strings.Join(strings.Fields(list), " "))
	}
	perMinute := map[string]int{}
	var name string
	for _, f := range strings.Fields(out) {
		switch {
		case strings.HasPrefix(f, "to_") || strings.HasPrefix(f, "from_") || strings.HasPrefix(f, "keepalive_"):
			name = f
		case name != "" && perMinute[name] == 0:
			if n, err := strconv.Atoi(f); err == nil {
				perMinute[name] = n
			}
		}
	}
	// WireGuard's keepalives (an empty data packet: 32 bytes of UDP
	// payload) are counted apart too, to tell an excess of them from one
	// of probes.
	t.Logf("idle packets per minute: to peer %d (%d WireGuard keepalives), from peer %d (%d), to rendezvous %d, from rendezvous %d",
		perMinute["to_peer"], perMinute["keepalive_to_peer"], perMinute["from_peer"], perMinute["keepalive_from_peer"], perMinute["to_rv"], perMinute["from_rv"])
	for _, p := range []*peerSpec{a, b} {
		if st, err := l.status(p); err == nil && len(st.Peers) > 0 {
			t.Logf("%s: heartbeat every %.1f s", p.iface, st.Peers[0].KeepaliveSeconds)
		}
	}
	// One probe or answer each way per 25 s is 2.4 a minute: 3 where the
	// minute falls badly, and one WireGuard keepalive to or from the peer.
	for name, n := range perMinute {
		if strings.HasPrefix(name, "keepalive_") {
			continue
		}
		if max := map[bool]int{true: 4, false: 3}[strings.HasSuffix(name, "peer")]; n > max {
			t.Errorf("%s: %d packets in a minute of idleness, want at most %d", name, n, max)
		}
	}
	if perMinute["to_rv"] == 0 || perMinute["to_peer"]+perMinute["from_peer"] == 0 {
		t.Errorf("no keepalives at all: %v; the NAT mappings would expire", perMinute)
	}
}

// TestSharedPublicAddressNoHairpin: two homes behind one carrier NAT that
// does not hairpin — the same public IP, no shared LAN (a1 and a2 cannot
// reach each other on theirs here). They are relayed, and must say why in
// plain words, and must not punch again at every introduction: before,
// each query re-introduced both and each intro started a new round, 276
// probes a minute toward the carrier's address for as long as they ran.
func TestSharedPublicAddressNoHairpin(t *testing.T) {
	t.Parallel()
	l := idleLab(t, "ptsh", "easy", "easy")
	isolate := filepath.Join(l.dir, "isolate.nft")
	os.WriteFile(isolate, []byte(`table inet isolate {
	chain in { type filter hook input priority 0; ip saddr 192.168.1.3 drop; }
	chain out { type filter hook output priority 0; ip daddr 192.168.1.3 drop; ip daddr 203.0.113.21 meta l4proto udp counter; }
}
`), 0o600)
	l.run("a1", "nft", "-f", isolate)
	rv := l.newRendezvous("rendezvous", rendezvousAddr, []string{rendezvousAddr, rendezvousAddr2}, "")
	a, _, _, _ := l.pair("ptsha0", "a1", "ptshb0", "a2", "relay", rv)
	start := time.Now()
	const why = "the peer is behind our own public address"
	eventually(t, 30*time.Second, "relay reason", func() error {
		st, err := l.status(a)
		if err != nil {
			return err
		}
		if r := st.Peers[0].Reason; !strings.Contains(r, why) {
			return fmt.Errorf("reason %q, want it to say %q", r, why)
		}
		return nil
	})
	// From 30 s to 60 s after the start: one retry round at most (50
	// probes), where every introduction used to start one.
	time.Sleep(time.Until(start.Add(30 * time.Second)))
	before := probesToOwnAddress(t, l)
	time.Sleep(30 * time.Second)
	if n := probesToOwnAddress(t, l) - before; n > 60 {
		t.Errorf("%d probes toward our own public address in 30 s, want at most one round's 50", n)
	} else {
		t.Logf("%d probes toward our own public address in 30 s", n)
	}
	l.ping(a, &peerSpec{addr: "100.64.0.2"})
}

// probesToOwnAddress reads a1's count of UDP packets sent to NAT A's public
// address (the isolate table's counter).
func probesToOwnAddress(t *testing.T, l *lab) int {
	t.Helper()
	out := l.run("a1", "nft", "list", "chain", "inet", "isolate", "out")
	m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// printMatrix prints the rows the pair tests recorded as one table, a line
// per pair: the attempts that reached the wanted path, the paths, the
// median and worst time to the first ping, and the reason.
func printMatrix(w io.Writer, name string) {
	recorded, err := readJSONLines[matrixRow](name)
	if err != nil {
		fmt.Fprintln(w, err)
		return
	}
	order, rows := groupRows(recorded, func(r matrixRow) string {
		pair := r.Pair
		if i := strings.LastIndex(pair, "#"); i > 0 {
			pair = pair[:i] // a repeated attempt
		}
		return pair
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PAIR\tWANT\tPATH A\tPATH B\tOK\tFIRST PING (median / worst)\tREASON")
	for _, pair := range order {
		rs := rows[pair]
		ok := 0
		var times []float64
		for _, r := range rs {
			if r.OK {
				ok++
			}
			times = append(times, r.FirstPing)
		}
		slices.Sort(times)
		last := rs[len(rs)-1]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%.2f s / %.2f s\t%s\n", pair[strings.LastIndex(pair, "/")+1:], last.Want,
			cmp.Or(last.PathA, "-"), cmp.Or(last.PathB, "-"), ok, len(rs), times[len(times)/2], times[len(times)-1], last.Reason)
	}
	tw.Flush()
}

// pairCase is two peers in a lab and the path they must reach.
type pairCase struct {
	name, hostA, hostB string
	wantPath           string // direct, lan, relay or relay-tcp
	// fixedA and fixedB make a plain WireGuard pair: fixed Endpoints, no
	// rendezvous.
	fixedA, fixedB string
	// portA and portB are ListenPorts; the first host behind a cone NAT
	// needs the forwarded one, 51820.
	portA, portB int
	ssh          bool   // also run a command over ssh
	wantReason   string // for a relayed pair: what status must say, once punching gave up
	// wantPathB is the path B must reach when it differs from A's: a peer
	// relayed over TCP is relayed over UDP on the other side.
	wantPathB string
	// wantEndpoint, if set, starts the endpoint in use instead of the
	// address the path implies (an IPv6 one, say).
	wantEndpoint string
	// repeat: run the case PUNCHTUN_MATRIX_REPEAT times (scripts/natmatrix.sh
	// sets it), for paths that depend on luck, such as birthday punching.
	repeat bool
}

// runPairs runs each case in its own subtest, in the lab l with the
// rendezvous rvKey.
func runPairs(t *testing.T, l *lab, rvKey key.Private, cases []pairCase) {
	for i, tc := range cases {
		runs := 1
		if n, err := strconv.Atoi(os.Getenv("PUNCHTUN_MATRIX_REPEAT")); err == nil && n > 1 && tc.repeat {
			runs = n
		}
		for range runs {
			t.Run(tc.name, func(t *testing.T) {
				l := *l
				l.t, l.dir = t, t.TempDir()
				a := newPeer(t, tc.hostA, fmt.Sprintf("%sa%d", l.prefix, i), "100.64.0.1")
				b := newPeer(t, tc.hostB, fmt.Sprintf("%sb%d", l.prefix, i), "100.64.0.2")
				a.fixed, b.fixed = tc.fixedA, tc.fixedB
				a.port, b.port = tc.portA, tc.portB
				l.checkPair(a, b, tc, rvKey)
			})
		}
	}
}

// matrixRow is one line of scripts/natmatrix.sh's table: the path each side
// reached, the time from starting both peers to the first ping reply
// through the tunnel, and the reason a relayed side gave.
type matrixRow struct {
	Pair      string  `json:"pair"`
	Want      string  `json:"want"`
	PathA     string  `json:"path_a"`
	PathB     string  `json:"path_b"`
	FirstPing float64 `json:"first_ping_s"`
	Reason    string  `json:"reason"`
	OK        bool    `json:"ok"`
}

// recordRow appends row to the file PUNCHTUN_MATRIX_OUT names, if any.
func recordRow(t *testing.T, row matrixRow) { appendJSONLine(t, "PUNCHTUN_MATRIX_OUT", row) }

// firstPing pings from `from` to `to` until a reply comes, and returns how
// long after start it came.
func (l *lab) firstPing(from, to *peerSpec, start time.Time) time.Duration {
	l.t.Helper()
	eventually(l.t, 30*time.Second, "first ping", func() error {
		return l.cmd(from.host, "ping", "-c", "1", "-W", "0.2", to.addr).Run()
	})
	return time.Since(start)
}

// checkPair brings a and b up, waits for the wanted path on both sides,
// checks ping both ways, 10 MiB over nc, status and wg show, and tears both
// down with SIGTERM.
func (l *lab) checkPair(a, b *peerSpec, tc pairCase, rvKey key.Private) {
	t := l.t
	row := matrixRow{Pair: t.Name(), Want: tc.wantPath}
	t.Cleanup(func() {
		row.OK = !t.Failed()
		recordRow(t, row)
	})
	start := time.Now()
	pa, pb := l.up(a, b, rvKey), l.up(b, a, rvKey)
	row.FirstPing = l.firstPing(a, b, start).Seconds()
	psA := l.waitPath(a, tc.wantPath)
	row.PathA = psA.Path
	row.PathB = l.waitPath(b, cmp.Or(tc.wantPathB, tc.wantPath)).Path
	l.ping(a, b)
	l.ping(b, a)
	l.transfer(a, b)
	if tc.ssh {
		l.ssh(a, b)
	}

	// The endpoint in use is the peer's real address on that path, or the
	// relay's, and a relayed peer says why.
	switch {
	case tc.wantEndpoint != "":
		if !strings.HasPrefix(psA.Endpoint, tc.wantEndpoint) {
			t.Errorf("%s path endpoint %q, want %s…", tc.wantPath, psA.Endpoint, tc.wantEndpoint)
		}
	case tc.wantPath == "lan" && !strings.HasPrefix(psA.Endpoint, "192.168.1."),
		tc.wantPath == "direct" && !strings.HasPrefix(psA.Endpoint, "203.0.113."),
		strings.HasPrefix(tc.wantPath, "relay") && psA.Endpoint != rendezvousAddr:
		t.Errorf("%s path endpoint %q", tc.wantPath, psA.Endpoint)
	}
	st, err := l.status(a)
	if err != nil {
		t.Fatal(err)
	}
	p := st.Peers[0]
	if p.LastHandshake == "" || p.RxBytes == 0 || p.TxBytes == 0 || p.Name != tc.hostB || p.PublicKey != b.priv.Public().String() {
		t.Errorf("status after traffic: %+v", p)
	}
	if tc.fixedA == "" && tc.wantPath != "relay" && tc.wantPath != "relay-tcp" && p.RTTMillis <= 0 {
		t.Errorf("no RTT for a punched path: %+v", p)
	}
	if tc.wantReason != "" {
		eventually(t, 15*time.Second, "relay reason", func() error {
			st, err := l.status(a)
			if err != nil {
				return err
			}
			row.Reason = st.Peers[0].Reason
			if r := st.Peers[0].Reason; r != tc.wantReason {
				return fmt.Errorf("reason %q, want %q", r, tc.wantReason)
			}
			return nil
		})
	}
	requireTools(t, "wireguard-tools", "wg")
	out := l.run(a.host, "wg", "show", a.iface)
	if !strings.Contains(out, b.priv.Public().String()) || !strings.Contains(out, psA.Endpoint) {
		t.Errorf("wg show lacks the peer or its endpoint %s:\n%s", psA.Endpoint, out)
	}

	// SIGTERM tears down and exits 0.
	for _, p := range []struct {
		proc *proc
		spec *peerSpec
	}{{pa, a}, {pb, b}} {
		if err := p.proc.stop(); err != nil {
			t.Errorf("%s exited with %v after SIGTERM", p.spec.iface, err)
		}
		if err := l.cmd(p.spec.host, "ip", "link", "show", p.spec.iface).Run(); err == nil {
			t.Errorf("%s still exists after exit", p.spec.iface)
		}
	}
}
