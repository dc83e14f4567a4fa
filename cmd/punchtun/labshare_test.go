//go:build linux

package main

// How lab tests share the machine. Independent lab tests run in parallel
// (t.Parallel), each in namespaces and interfaces named for it alone; a
// measurement that load could distort (a first reply within a second, a
// gap, a flood's effect) runs in a quiet section, which waits until no
// other test is in a heavy step (a lab built or torn down, bulk data, a
// compile) and holds new ones back until it ends. The rule for a new lab
// test is in docs/lab.md.

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// labSlots is how many labs are up at once, but for idle ones (idleLab).
// Lab tests mostly wait (timers, NAT timeouts, a frozen peer), so more of
// them than cores share the machine. PUNCHTUN_LAB_SLOTS=N sets it:
// scripts/test.sh runs the suite with 1 (one test at a time, the idle ones
// beside it).
var labSlots = newSlots(6)

// setParallel lets every parallel test start at once unless -parallel
// says otherwise (its default, GOMAXPROCS, is 2 here): labSlots bounds
// the labs instead, and lets a test that waits minutes (idleLab) start
// first rather than where Go's order puts it.
func setParallel() {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if n, err := strconv.Atoi(os.Getenv("PUNCHTUN_LAB_SLOTS")); err == nil && n > 0 {
		labSlots = newSlots(n)
	}
	if !set {
		flag.Set("test.parallel", strconv.Itoa(100))
	} else if n, _ := strconv.Atoi(flag.Lookup("test.parallel").Value.String()); n > 0 && n < labSlots.n {
		labSlots = newSlots(n)
	}
}

// slots is a counting semaphore in which an idle lab's build or teardown
// goes before every test waiting to run in a slot: an idle test's wait
// (a 200-s freeze) runs beside the others only once its lab is up, so
// with one slot, queued behind them, it came after all of them and the
// suite ended with minutes of one slot idle.
type slots struct {
	mu          sync.Mutex
	cond        *sync.Cond
	n, used     int
	idleWaiting int
}

func newSlots(n int) *slots {
	s := &slots{n: n}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// take waits for a slot; idle says it is for an idle lab's build or
// teardown, which goes first.
func (s *slots) take(idle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idle {
		s.idleWaiting++
		defer func() { s.idleWaiting-- }()
	}
	for s.used == s.n || !idle && s.idleWaiting > 0 {
		s.cond.Wait()
	}
	s.used++
}

func (s *slots) give() {
	s.mu.Lock()
	s.used--
	s.cond.Broadcast()
	s.mu.Unlock()
}

// takeLabSlot waits for one of labSlots, given back when t ends.
func takeLabSlot(t *testing.T) {
	labSlots.take(false)
	start := time.Now()
	t.Cleanup(func() {
		labSlots.give()
		slotTimes.add(owner(t), time.Since(start))
	})
}

// inLabSlot runs f, an idle lab's build or teardown, in one of labSlots
// for test t, before the tests waiting for one.
func inLabSlot(t *testing.T, f func()) {
	labSlots.take(true)
	start := time.Now()
	defer func() {
		labSlots.give()
		slotTimes.add(owner(t), time.Since(start))
	}()
	f()
}

// slotTimes is how long each top-level test held a lab slot: with one
// slot, the lab's wall time is their sum (the idle waits run beside), so
// this is where to look to make the suite faster. go test -v prints it.
var slotTimes = &testTimes{by: map[string]time.Duration{}}

// sections is how long each test was in quiet sections that were not
// light: time in which no other test took a heavy step or a quiet section
// (with two slots, what the other slot's test may have waited for).
var sections = &testTimes{by: map[string]time.Duration{}}

// stalls is how long each test waited for other tests' quiet sections or
// heavy steps (heavy, quietFrom): in a slot, time the slot is idle.
var stalls = &testTimes{by: map[string]time.Duration{}}

type testTimes struct {
	sync.Mutex
	by map[string]time.Duration
}

func (s *testTimes) add(test string, d time.Duration) {
	s.Lock()
	s.by[test] += d
	s.Unlock()
}

// printSlotTimes prints slotTimes, longest first.
func printSlotTimes(w io.Writer) {
	slotTimes.Lock()
	defer slotTimes.Unlock()
	if len(slotTimes.by) == 0 {
		return
	}
	names := make([]string, 0, len(slotTimes.by))
	var sum time.Duration
	for n, d := range slotTimes.by {
		names = append(names, n)
		sum += d
	}
	sort.Slice(names, func(i, j int) bool { return slotTimes.by[names[i]] > slotTimes.by[names[j]] })
	stalls.Lock()
	defer stalls.Unlock()
	sections.Lock()
	defer sections.Unlock()
	fmt.Fprintf(w, "\nlab slot time by test, time it waited for other tests' quiet sections or heavy steps, and time in its own quiet sections, but light ones (%d slots; sum %v):\n",
		labSlots.n, sum.Round(time.Second))
	for _, n := range names {
		fmt.Fprintf(w, "%8.1fs %6.1fs %6.1fs  %s\n", slotTimes.by[n].Seconds(), stalls.by[n].Seconds(), sections.by[n].Seconds(), n)
	}
}

// owner is the top-level test t belongs to: its subtests share its names.
func owner(t *testing.T) string {
	name, _, _ := strings.Cut(t.Name(), "/")
	return name
}

// labNames are the lab prefixes and interface names taken in this run, and
// by which test. Namespaces share /var/run: two tests running at once with
// one interface name would share /var/run/wireguard/IFACE.sock.
var labNames struct {
	sync.Mutex
	owner map[string]string
}

// claimName fails t if another test uses name (of kind "lab prefix",
// "interface" or "namespace") in this run. Names are claimed for the whole run, whatever
// the order the tests ran in, so a clash fails every full run, not only
// the runs where the two tests happen to overlap.
func claimName(t *testing.T, kind, name string) {
	t.Helper()
	labNames.Lock()
	defer labNames.Unlock()
	if labNames.owner == nil {
		labNames.owner = map[string]string{}
	}
	k, o := kind+" "+name, owner(t)
	if prev, ok := labNames.owner[k]; ok && prev != o {
		t.Fatalf("%s %q is %s's too: lab tests run in parallel, so each needs names of its own (docs/lab.md)", kind, name, prev)
	}
	labNames.owner[k] = o
}

// machine is the gate between heavy steps and quiet sections. Tests are
// known by their names: a test and its subtests are one (a subtest of a
// test in a quiet section is part of it), sibling subtests are not.
var machine = struct {
	sync.Mutex
	cond  *sync.Cond
	heavy map[string]int // heavy steps under way, by test
	quiet map[string]int // quiet sections under way, nested, by test
	// light marks the tests whose quiet section is light work only
	// (quietLight): those share their time with one another.
	light   map[string]bool
	waiting int // quiet sections waiting: new heavy steps wait behind them
	// heavyWaiting counts heavy steps waiting; heavyTurn is set when a
	// quiet section ends with some waiting, and holds new quiet sections
	// back until they have started: else a test whose quiet sections
	// follow one another would starve every heavy step.
	heavyWaiting int
	heavyTurn    bool
}{heavy: map[string]int{}, quiet: map[string]int{}, light: map[string]bool{}}

func init() { machine.cond = sync.NewCond(&machine.Mutex) }

// related reports whether tests a and b are one, or one a subtest of the
// other.
func related(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// heavyBy reports whether a test related to name, or (others) one that is
// not, is in a heavy step; the caller holds machine's lock.
func heavyBy(name string, others bool) bool {
	for h, n := range machine.heavy {
		if n > 0 && related(h, name) != others {
			return true
		}
	}
	return false
}

// quietBy reports whether a test not related to name is in a quiet
// section that keeps name's out: any, or (light) one that is not light
// itself; the caller holds machine's lock.
func quietBy(name string, light bool) bool {
	for q := range machine.quiet {
		if !related(q, name) && !(light && machine.light[q]) {
			return true
		}
	}
	return false
}

// heavy runs fn, a step that loads the machine for a while (a lab built
// or torn down, megabytes through a tunnel, a compile), outside every
// other test's quiet section.
func heavy(t *testing.T, fn func()) {
	name, start := t.Name(), time.Now()
	machine.Lock()
	own := false
	for q := range machine.quiet {
		if related(q, name) {
			if machine.light[q] {
				machine.Unlock()
				t.Fatalf("a heavy step in %s's light quiet section: light sections share their time, so one with a heavy step would disturb the others' measurements, and two would wait for each other", q)
			}
			own = true
		}
	}
	// A test already in a heavy step or a quiet section goes on: waiting
	// here for others would deadlock it with a quiet section waiting for
	// it.
	machine.heavyWaiting++
	for !heavyBy(name, false) && (quietBy(name, false) || !own && machine.waiting > 0 && !machine.heavyTurn) {
		machine.cond.Wait()
	}
	if machine.heavyWaiting--; machine.heavyWaiting == 0 && machine.heavyTurn {
		machine.heavyTurn = false
		machine.cond.Broadcast()
	}
	machine.heavy[name]++
	machine.Unlock()
	stalls.add(owner(t), time.Since(start))
	defer func() {
		machine.Lock()
		if machine.heavy[name]--; machine.heavy[name] == 0 {
			delete(machine.heavy, name)
		}
		machine.cond.Broadcast()
		machine.Unlock()
	}()
	fn()
}

// quiet runs fn, a measurement, once no other test is in a heavy step,
// and keeps other tests' heavy steps and quiet sections out until it
// returns. Other tests' light work (polling a status, a ping, an idle
// tunnel) goes on. Keep fn to the measurement: heavy steps of other tests
// wait for it.
func quiet(t *testing.T, fn func()) {
	defer quietFrom(t)()
	fn()
}

// quietFrom begins a quiet section and returns its end, for a section
// that spans much of a test (defer the end too: a Fatal then ends it;
// ending twice is once).
func quietFrom(t *testing.T) (end func()) { return enterQuiet(t, false) }

// quietLight runs fn in a quiet section like quiet's, for fn that is light
// work only (a ping, a status poll, packets counted): it takes no heavy
// step, so it shares its time with other tests' light sections, which
// disturb it no more than their light work outside one. An idle test's
// measurements (idleLab) use it: run one after another, one test's minute
// held the others' timed moments back until its end, and the slot's
// heavy steps waited for the sum.
func quietLight(t *testing.T, fn func()) {
	defer enterQuiet(t, true)()
	fn()
}

// enterQuiet begins a quiet section, light (quietLight) or not, and
// returns its end.
func enterQuiet(t *testing.T, light bool) (end func()) {
	name, start := t.Name(), time.Now()
	machine.Lock()
	machine.waiting++
	for quietBy(name, light) || heavyBy(name, true) || machine.heavyTurn && len(machine.quiet) == 0 {
		machine.cond.Wait()
	}
	machine.waiting--
	if machine.quiet[name]++; machine.quiet[name] == 1 {
		machine.light[name] = light
	}
	machine.Unlock()
	stalls.add(owner(t), time.Since(start))
	entered := time.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			if !light {
				sections.add(owner(t), time.Since(entered))
			}
			machine.Lock()
			if machine.quiet[name]--; machine.quiet[name] == 0 {
				delete(machine.quiet, name)
				delete(machine.light, name)
				machine.heavyTurn = len(machine.quiet) == 0 && machine.heavyWaiting > 0
			}
			machine.cond.Broadcast()
			machine.Unlock()
		})
	}
}

// quietLead is how long before its moment a timed measurement starts
// waiting for quiet: time for the heavy steps under way to end (a lab
// built took 3.5 s at most in a suite run), during which new ones wait.
const quietLead = 5 * time.Second

// quietAt sleeps until at, the end of a wait that is the test's own
// parameter (a freeze, an idle tunnel), and then runs fn, light work only,
// in a light quiet section (quietLight). The wait runs over only if quiet
// comes later than quietLead.
func quietAt(t *testing.T, at time.Time, fn func()) {
	time.Sleep(time.Until(at.Add(-quietLead)))
	quietLight(t, func() {
		if late := time.Since(at); late > 0 {
			t.Logf("quiet came %v late: the wait ran that much longer", late.Round(time.Millisecond))
		}
		time.Sleep(time.Until(at))
		fn()
	})
}

// sectionEvents skips a test of the sections under -parallel 1 and
// returns a recorder of its events, which its cleanup checks against
// want. Its subtests meet halfway: one at a time (as scripts/test.sh runs
// the lab), where no section is ever contended, they would wait for each
// other forever.
func sectionEvents(t *testing.T, want ...string) (note func(string)) {
	if p := flag.Lookup("test.parallel"); p != nil && p.Value.String() == "1" {
		t.Skip("-parallel 1: one test at a time, so no quiet section is contended")
	}
	var mu sync.Mutex
	var got []string
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(got, want) {
			t.Errorf("events %q, want %q", got, want)
		}
	})
	return func(e string) { mu.Lock(); got = append(got, e); mu.Unlock() }
}

// untilMachine polls until ok, called under machine's lock, is true: a
// test of the sections waits so for the others to queue.
func untilMachine(ok func() bool) {
	for {
		machine.Lock()
		done := ok()
		machine.Unlock()
		if done {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestQuietSections: a quiet section waits for a heavy step under way, a
// heavy step waits for a quiet section, and a subtest of a test in a quiet
// section is part of it.
func TestQuietSections(t *testing.T) {
	note := sectionEvents(t, "heavy", "heavy done", "quiet", "inner heavy", "quiet done", "heavy again")
	heavyOn, quietOn := make(chan struct{}), make(chan struct{})
	t.Run("heavy", func(t *testing.T) {
		t.Parallel()
		heavy(t, func() {
			note("heavy")
			close(heavyOn)
			time.Sleep(100 * time.Millisecond)
			note("heavy done")
		})
		<-quietOn
		heavy(t, func() { note("heavy again") })
	})
	t.Run("quiet", func(t *testing.T) {
		t.Parallel()
		<-heavyOn
		quiet(t, func() {
			note("quiet")
			close(quietOn)
			t.Run("inner", func(t *testing.T) { heavy(t, func() { note("inner heavy") }) })
			time.Sleep(100 * time.Millisecond)
			note("quiet done")
		})
	})
}

// TestHeavyNotStarved: a heavy step waiting for a quiet section goes
// before the next quiet section of the same test, one that follows at
// once: else a test of back-to-back sections held every other test's
// lab build back until its end.
func TestHeavyNotStarved(t *testing.T) {
	note := sectionEvents(t, "quiet 1", "heavy", "quiet 2")
	inQuiet := make(chan struct{})
	t.Run("quiet", func(t *testing.T) {
		t.Parallel()
		quiet(t, func() {
			close(inQuiet)
			untilMachine(func() bool { return machine.heavyWaiting > 0 })
			note("quiet 1")
		})
		quiet(t, func() { note("quiet 2") })
	})
	t.Run("heavy", func(t *testing.T) {
		t.Parallel()
		<-inQuiet
		heavy(t, func() { note("heavy") })
	})
}

// TestLightSectionsShare: light quiet sections of two tests run at once,
// and a heavy step and a quiet section that is not light wait for both.
func TestLightSectionsShare(t *testing.T) {
	note := sectionEvents(t, "a", "b", "a done", "b done", "heavy", "quiet")
	aIn, bIn := make(chan struct{}), make(chan struct{})
	t.Run("a", func(t *testing.T) {
		t.Parallel()
		quietLight(t, func() {
			note("a")
			close(aIn)
			select {
			case <-bIn:
			case <-time.After(5 * time.Second):
				note("b kept out")
			}
			note("a done")
		})
	})
	t.Run("b", func(t *testing.T) {
		t.Parallel()
		<-aIn
		quietLight(t, func() {
			note("b")
			close(bIn)
			untilMachine(func() bool { return machine.heavyWaiting == 1 && machine.waiting == 1 })
			note("b done")
		})
	})
	t.Run("heavy", func(t *testing.T) {
		t.Parallel()
		<-bIn
		heavy(t, func() { note("heavy") })
	})
	t.Run("quiet", func(t *testing.T) {
		t.Parallel()
		<-bIn
		quiet(t, func() { note("quiet") })
	})
}
