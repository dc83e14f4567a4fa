//go:build linux

package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// floodRSSLimit bounds the rendezvous's resident memory under the flood.
const floodRSSLimit = 64 << 20

// TestFloodRendezvous floods the rendezvous from a hostile public host
// while two real peers, each behind its own NAT, keep a tunnel up: random
// bytes, truncated and oversized messages, registrations forged for the
// real peers' keys and for made-up keys, replays of their captured
// registrations, garbage STUN and a STUN request flood. The real peers'
// registrations must all be answered, their ping must lose nothing, the
// rendezvous must stay within its memory bound, and it must have counted
// what it dropped, by reason.
// Not parallel: its flood loads the machine, and its bounds need the
// machine to themselves (serial tests run before the parallel ones).
func TestFloodRendezvous(t *testing.T) {
	l := newLab(t, "ptf", "easy", "easy")
	flood := floodBinary(t)
	rv, rvKey := l.startRendezvousProc()
	a := newPeer(t, "a1", "ptfa0", "100.64.0.1")
	b := newPeer(t, "b1", "ptfb0", "100.64.0.2")

	// What an attacker on the path would have captured: the peers'
	// registrations, made here with their keys before they start, so that
	// every one is older than what the peers then send.
	replays := filepath.Join(l.dir, "replays.bin")
	if err := os.WriteFile(replays, captureRegistrations(rvKey.Public(), 16, a, b), 0o600); err != nil {
		t.Fatal(err)
	}

	pa, pb := l.up(a, b, rvKey), l.up(b, a, rvKey)
	l.waitPath(a, "direct")
	l.waitPath(b, "direct")
	l.ping(a, b)

	// A peer refreshes its registration every RefreshInterval after the
	// last acknowledgement: the flood covers each peer's next refresh.
	regA, regB := rv.lastRegistration(a), rv.lastRegistration(b)
	refreshA, refreshB := regA.Add(rendezvous.RefreshInterval), regB.Add(rendezvous.RefreshInterval)
	floodStart := minTime(refreshA, refreshB).Add(-4 * time.Second)
	floodEnd := maxTime(refreshA, refreshB).Add(4 * time.Second)
	if floodEnd.Sub(floodStart) < 10*time.Second {
		floodEnd = floodStart.Add(10 * time.Second)
	}

	// The tunnel is up: from now on a ping every 200 ms, until 3 s after
	// the flood, must lose nothing.
	pingCount := int(time.Until(floodEnd.Add(3*time.Second))/(200*time.Millisecond)) + 1
	ping := l.start(a.host, "ping-flood", "ping", "-n", "-i", "0.2", "-W", "2", "-c", strconv.Itoa(pingCount), b.addr)

	before := rv.stats()
	rssBefore := rv.rss()
	time.Sleep(time.Until(floodStart)) // the baseline: the ping runs meanwhile
	var (
		mu           sync.Mutex
		rssMax       = rssBefore
		unregistered []string
		stop         = make(chan struct{})
		sampled      sync.WaitGroup
	)
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			r := rv.rss()
			mu.Lock()
			rssMax = max(rssMax, r)
			mu.Unlock()
			if i%5 != 0 {
				continue
			}
			for _, p := range []*peerSpec{a, b} {
				if st, err := l.status(p); err == nil && (len(st.Rendezvous) == 0 || !st.Rendezvous[0].Registered) {
					mu.Lock()
					unregistered = append(unregistered, fmt.Sprintf("%s at %s", p.iface, time.Now().Format("15:04:05.000")))
					mu.Unlock()
				}
			}
		}
	}()
	duration := time.Until(floodEnd).Round(100 * time.Millisecond)
	flooder := l.start("pub", "flood", flood, "-duration", duration.String(), "-pps", "20000",
		"-target", rendezvousAddr, "-target", rendezvousAddr2,
		"-rendezvous-key", rvKey.Public().String(),
		"-victims", a.priv.Public().String()+","+b.priv.Public().String(),
		"-replays", replays)
	select {
	case <-flooder.done:
	case <-time.After(duration + 30*time.Second):
		t.Fatal("the flooder did not finish")
	}
	close(stop)
	sampled.Wait()
	if flooder.err != nil {
		out, _ := os.ReadFile(flooder.log)
		t.Fatalf("flooder: %v\n%s", flooder.err, out)
	}
	var report struct {
		Sent       map[string]uint64 `json:"sent"`
		Total      uint64            `json:"total"`
		SendErrors uint64            `json:"send_errors"`
		Seconds    float64           `json:"seconds"`
	}
	out, _ := os.ReadFile(flooder.log)
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("flooder report %q: %v", out, err)
	}

	select {
	case <-ping.done:
	case <-time.After(30 * time.Second):
		t.Fatal("ping did not finish")
	}
	after := rv.stats()
	delta := func(k string) uint64 { return after[k] - before[k] }
	pingOut, _ := os.ReadFile(ping.log)
	transmitted, received := pingSummary(t, string(pingOut))

	t.Logf("flood from pub: %d packets in %.1f s (%.0f/s), %d not sent (socket buffer full); by kind: %s",
		report.Total, report.Seconds, float64(report.Total)/report.Seconds, report.SendErrors, counts(report.Sent))
	t.Logf("rendezvous dropped: %s; answered STUN %d; registrations of the real peers during the flood %d",
		counts(map[string]uint64{
			"malformed": delta("drop_malformed"), "oversize": delta("drop_oversize"), "auth": delta("drop_auth"),
			"replay": delta("drop_replay"), "rate_limited": delta("drop_rate_limited"), "too_many": delta("drop_too_many"),
			"unregistered": delta("drop_unregistered"), "not_mutual": delta("drop_not_mutual"),
		}), delta("stun"), delta("registrations"))
	t.Logf("rendezvous RSS: %d KiB before, %d KiB at most (bound %d KiB)", rssBefore>>10, rssMax>>10, floodRSSLimit>>10)
	t.Logf("real traffic: ping %d sent, %d received, %d lost", transmitted, received, transmitted-received)

	// Zero lost registrations: each peer's refresh in the flood was
	// answered, neither ever saw the rendezvous stop answering.
	if got := delta("registrations"); got < 2 {
		t.Errorf("%d registrations acknowledged during the flood, want each peer's refresh", got)
	}
	for _, p := range []*proc{pa, pb} {
		if log, _ := os.ReadFile(p.log); strings.Contains(string(log), "rendezvous stopped answering") {
			t.Errorf("%s: a registration went unanswered", p.name)
		}
	}
	if len(unregistered) != 0 {
		t.Errorf("peers not registered during the flood: %v", unregistered)
	}
	if transmitted == 0 || received != transmitted {
		t.Errorf("ping through the tunnel: %d sent, %d received", transmitted, received)
	}
	if rssMax > floodRSSLimit {
		t.Errorf("rendezvous RSS reached %d KiB, bound %d KiB", rssMax>>10, floodRSSLimit>>10)
	}
	for _, reason := range []string{"drop_malformed", "drop_oversize", "drop_auth", "drop_replay", "drop_rate_limited"} {
		if delta(reason) == 0 {
			t.Errorf("%s: 0 during the flood", reason)
		}
	}
	if delta("stun") > uint64(2*rendezvous.DefaultSourceRate+rendezvous.DefaultSourceRate*report.Seconds+50) {
		t.Errorf("%d STUN answers during the flood: more than one source's rate", delta("stun"))
	}
	// The peers still have their direct path and registration.
	for _, p := range []*peerSpec{a, b} {
		st, err := l.status(p)
		if err != nil || len(st.Peers) != 1 || st.Peers[0].Path != "direct" || !st.Rendezvous[0].Registered {
			t.Errorf("%s after the flood: %+v %v", p.iface, st, err)
		}
	}
}

// floodBinary builds the hostile host's program once per test run.
func floodBinary(t *testing.T) string {
	return buildTool(t, "flood", "github.com/punchtun/punchtun/rendezvous/internal/flood")
}

// rvProc is a rendezvous process in the lab.
type rvProc struct {
	*proc
	t *testing.T
}

// startRendezvousProc is startRendezvous, keeping the process: the flood
// test reads its memory and its counters.
func (l *lab) startRendezvousProc() (*rvProc, key.Private) {
	l.t.Helper()
	p, rvKey := l.launchRendezvous()
	rv := &rvProc{proc: p, t: l.t}
	eventually(l.t, 10*time.Second, "rendezvous listening", func() error {
		if log, _ := os.ReadFile(p.log); !strings.Contains(string(log), "rendezvous listening") {
			return fmt.Errorf("log: %s", log)
		}
		return nil
	})
	// `ip netns exec` execs the command: its PID is the rendezvous's.
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.cmd.Process.Pid)); strings.TrimSpace(string(comm)) != "punchtun" {
		l.t.Fatalf("process %d is %q, not the rendezvous", p.cmd.Process.Pid, comm)
	}
	return rv, rvKey
}

var statsField = regexp.MustCompile(`([a-z_]+)=([0-9]+)`)

// stats has the rendezvous log its counters (SIGUSR1) and returns them.
func (rv *rvProc) stats() map[string]uint64 {
	rv.t.Helper()
	seen := rv.statsLines()
	rv.cmd.Process.Signal(syscall.SIGUSR1)
	var line string
	eventually(rv.t, 5*time.Second, "rendezvous stats", func() error {
		lines := rv.statsLinesText()
		if len(lines) <= seen {
			return fmt.Errorf("no new stats line")
		}
		line = lines[len(lines)-1]
		return nil
	})
	m := make(map[string]uint64)
	for _, f := range statsField.FindAllStringSubmatch(line, -1) {
		m[f[1]], _ = strconv.ParseUint(f[2], 10, 64)
	}
	if _, ok := m["drop_rate_limited"]; !ok {
		rv.t.Fatalf("stats line without drop_rate_limited: %s", line)
	}
	return m
}

func (rv *rvProc) statsLines() int { return len(rv.statsLinesText()) }

func (rv *rvProc) statsLinesText() []string {
	b, _ := os.ReadFile(rv.log)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "rendezvous stats") && strings.Contains(l, "drop_oversize=") {
			out = append(out, l)
		}
	}
	return out
}

// rss is the rendezvous's resident memory in bytes.
func (rv *rvProc) rss() uint64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", rv.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// lastRegistration is when the rendezvous last logged p registering or
// moving: the peer refreshes RefreshInterval after.
func (rv *rvProc) lastRegistration(p *peerSpec) time.Time {
	rv.t.Helper()
	var at time.Time
	eventually(rv.t, 10*time.Second, p.iface+" registered", func() error {
		b, _ := os.ReadFile(rv.log)
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, p.priv.Public().String()) ||
				!(strings.Contains(line, `msg="peer registered"`) || strings.Contains(line, `msg="peer moved"`)) {
				continue
			}
			ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
			if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
				at = t
			}
		}
		if at.IsZero() {
			return fmt.Errorf("not in the rendezvous's log")
		}
		return nil
	})
	return at
}

// captureRegistrations returns n registrations of each peer, as the peer
// would send them, each behind its length.
func captureRegistrations(rv key.Key, n int, peers ...*peerSpec) []byte {
	var out []byte
	var clock wire.Clock
	for _, p := range peers {
		shared := wire.NewSharedKey(p.priv, rv)
		var wants []key.Key
		for _, o := range peers {
			if o != p {
				wants = append(wants, o.priv.Public())
			}
		}
		for i := 0; i < n; i++ {
			m := &wire.Register{
				Time:       clock.Next(uint64(time.Now().UnixNano())),
				Candidates: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.2:40000")},
				Wants:      wants,
			}
			pkt := wire.Seal(nil, m.Type(), p.priv.Public(), &shared, m.Append(nil))
			out = binary.BigEndian.AppendUint16(out, uint16(len(pkt)))
			out = append(out, pkt...)
		}
	}
	return out
}

var pingRe = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

func pingSummary(t *testing.T, out string) (transmitted, received int) {
	m := pingRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no ping summary in %q", out)
	}
	transmitted, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return transmitted, received
}

func counts(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
