//go:build linux

package main

// The recovery tests' instruments: a pinger that stamps every reply, the
// gaps and losses measured from its replies, and the figures each event
// leaves in PUNCHTUN_GAPS_OUT for scripts/recovery.sh's table.

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// pingInterval is the pinger's: five per second.
const pingInterval = 200 * time.Millisecond

// noLossBound is the longest gap allowed where no packet may be lost: one
// ping interval, and a margin for a loaded test machine.
const noLossBound = pingInterval + 300*time.Millisecond

// pinger is `ping -D -i 0.2` from one peer to the other's virtual IP, for
// the whole test: -D stamps every reply with the time it came.
type pinger struct {
	l    *lab
	proc *proc
}

type pingReply struct {
	at  time.Time
	seq int
}

// startPinger starts a pinger and waits until its replies flow steadily,
// before anything happens.
func (l *lab) startPinger(from, to *peerSpec) *pinger {
	l.t.Helper()
	pg := l.startPingerLossy(from, to)
	if _, ok := pg.waitSteady(time.Now(), 10*time.Second); !ok {
		l.t.Fatalf("ping %s → %s never steady: %d replies", from.iface, to.addr, len(pg.replies()))
	}
	return pg
}

// startPingerLossy starts a pinger and waits for its first reply only: on
// a path that loses a third of the round trips, five replies in a row may
// well not come within seconds.
func (l *lab) startPingerLossy(from, to *peerSpec) *pinger {
	l.t.Helper()
	name := fmt.Sprintf("ping-%s-%s", from.iface, time.Now().Format("150405.000"))
	pg := &pinger{l: l, proc: l.start(from.host, name, "ping", "-D", "-n", "-i", "0.2", to.addr)}
	eventually(l.t, 10*time.Second, "a first ping reply", func() error {
		if len(pg.replies()) == 0 {
			return fmt.Errorf("no reply yet")
		}
		return nil
	})
	return pg
}

var replyLine = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from .*icmp_seq=(\d+)`)

// replies parses what ping printed so far.
func (pg *pinger) replies() []pingReply {
	f, err := os.Open(pg.proc.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []pingReply
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := replyLine.FindStringSubmatch(sc.Text())
		if m == nil || strings.Contains(sc.Text(), "DUP!") {
			continue
		}
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		frac := m[2] + strings.Repeat("0", 9-len(m[2]))
		nsec, _ := strconv.ParseInt(frac[:9], 10, 64)
		seq, _ := strconv.Atoi(m[3])
		out = append(out, pingReply{at: time.Unix(sec, nsec), seq: seq})
	}
	return out
}

// steadyRun is how many consecutive replies, each within two intervals of
// the last, make traffic count as flowing.
const steadyRun = 5

// waitSteady waits until replies that came after `after` flow steadily,
// and returns the time of the first of them; false if not within timeout.
func (pg *pinger) waitSteady(after time.Time, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for {
		var first, prev time.Time
		run := 0
		for _, r := range pg.replies() {
			if !r.at.After(after) {
				continue
			}
			if run > 0 && r.at.Sub(prev) > 2*pingInterval {
				run = 0
			}
			if run == 0 {
				first = r.at
			}
			run++
			prev = r.at
			if run >= steadyRun {
				return first, true
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// firstAfter is the time of the first reply after t, zero if none.
func (pg *pinger) firstAfter(t time.Time) time.Time {
	for _, r := range pg.replies() {
		if r.at.After(t) {
			return r.at
		}
	}
	return time.Time{}
}

// gap is the longest time between consecutive replies in the window
// [from, to], counting from the last reply before from; when replies stop
// before to, the time from the last one to `to` counts too.
func (pg *pinger) gap(from, to time.Time) time.Duration {
	var last time.Time
	var longest time.Duration
	for _, r := range pg.replies() {
		if !r.at.After(from) {
			last = r.at
			continue
		}
		if r.at.After(to) {
			break
		}
		if !last.IsZero() {
			longest = max(longest, r.at.Sub(last))
		}
		last = r.at
	}
	if last.IsZero() {
		return to.Sub(from)
	}
	return max(longest, to.Sub(last))
}

// loss counts the echo requests whose reply never came, among those sent
// from the first reply after from to the last before to.
func (pg *pinger) loss(from, to time.Time) (sent, lost int) {
	var seqs []int
	for _, r := range pg.replies() {
		if r.at.After(from) && !r.at.After(to) {
			seqs = append(seqs, r.seq)
		}
	}
	if len(seqs) == 0 {
		return 0, 0
	}
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	sent = seqs[len(seqs)-1] - seqs[0] + 1
	return sent, sent - len(seqs)
}

// gapRow is one line of scripts/recovery.sh's table.
type gapRow struct {
	Event  string  `json:"event"`
	Bound  float64 `json:"bound_s"`
	Gap    float64 `json:"gap_s"` // -1: not measured (the test failed before)
	Detail string  `json:"detail,omitempty"`
	OK     bool    `json:"ok"`
}

// figure is an event's measured figure: logged when measured, and appended
// to PUNCHTUN_GAPS_OUT when the test ends, with whether it passed.
type figure struct {
	t   *testing.T
	row gapRow
}

func newFigure(t *testing.T, event string, bound time.Duration) *figure {
	f := &figure{t: t, row: gapRow{Event: event, Bound: bound.Seconds(), Gap: -1}}
	t.Cleanup(func() { appendJSONLine(t, "PUNCHTUN_GAPS_OUT", f.row) })
	return f
}

// measured records the figure and asserts the bound.
func (f *figure) measured(d time.Duration, detail string) {
	f.t.Helper()
	f.row.Gap, f.row.Detail = d.Seconds(), detail
	f.row.OK = d.Seconds() <= f.row.Bound
	f.t.Logf("%s: %.2f s (bound %.2f s) %s", f.row.Event, d.Seconds(), f.row.Bound, detail)
	if !f.row.OK {
		f.t.Errorf("%s: %.2f s, bound %.2f s %s", f.row.Event, d.Seconds(), f.row.Bound, detail)
	}
}

// failf fails the test and the figure, for what else the event must
// satisfy (no packet lost, say).
func (f *figure) failf(format string, args ...any) {
	f.t.Helper()
	f.row.OK = false
	f.t.Errorf(format, args...)
}

// measureGap waits (up to wait) for replies to flow steadily again after
// the event at start, and records the longest gap from start until then. A
// recovery that never came fails, whatever the gaps between the stray
// replies were.
func (pg *pinger) measureGap(f *figure, start time.Time, wait time.Duration) {
	f.t.Helper()
	resumed, ok := pg.waitSteady(start, wait)
	if !ok {
		f.row.Gap = pg.gap(start, time.Now()).Seconds()
		f.failf("%s: no steady replies within %v of the event", f.row.Event, wait)
		return
	}
	f.measured(pg.gap(start, resumed), "")
}

// printGaps prints the figures the recovery tests recorded, a line per
// event: its bound, the worst gap over its runs, and how many runs passed.
func printGaps(w io.Writer, name string) {
	rows, err := readJSONLines[gapRow](name)
	if err != nil {
		fmt.Fprintln(w, err)
		return
	}
	order, byEvent := groupRows(rows, func(r gapRow) string { return r.Event })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT\tBOUND\tGAP (worst)\tRUNS\tRESULT\tDETAIL")
	for _, ev := range order {
		rs := byEvent[ev]
		ok, worst, measured := 0, -1.0, true
		var gaps []string
		for _, r := range rs {
			if r.OK {
				ok++
			}
			if r.Gap < 0 {
				measured = false
				gaps = append(gaps, "-")
				continue
			}
			worst = max(worst, r.Gap)
			gaps = append(gaps, fmt.Sprintf("%.2f", r.Gap))
		}
		result := "pass"
		if ok < len(rs) {
			result = "FAIL"
		}
		g := "-"
		if worst >= 0 {
			g = fmt.Sprintf("%.2f s", worst)
		}
		if !measured {
			g += " (some runs unmeasured)"
		}
		detail := rs[len(rs)-1].Detail
		if len(rs) > 1 {
			detail = "gaps " + strings.Join(gaps, " ") + "; " + detail
		}
		fmt.Fprintf(tw, "%s\t%.2f s\t%s\t%d/%d\t%s\t%s\n", ev, rs[0].Bound, g, ok, len(rs), result, detail)
	}
	tw.Flush()
}
