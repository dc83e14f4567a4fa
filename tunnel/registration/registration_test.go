package registration

import (
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
)

// run ticks r every 50 ms from *now for d and returns the times at which
// each kind of thing fell due.
func run(r *Registration, now *time.Time, d time.Duration, udpBlocked bool) (registers, stuns, dials, lost []time.Duration) {
	start := *now
	for end := now.Add(d); now.Before(end); *now = now.Add(50 * time.Millisecond) {
		due := r.Tick(*now, udpBlocked)
		at := now.Sub(start)
		if due.Register {
			registers = append(registers, at)
		}
		if due.STUN {
			stuns = append(stuns, at)
		}
		if due.Dial {
			dials = append(dials, at)
		}
		if due.Lost {
			lost = append(lost, at)
		}
	}
	return
}

func TestResolveOnceThenRegister(t *testing.T) {
	var r Registration
	now := time.Unix(1000, 0)
	if due := r.Tick(now, false); !due.Resolve || due.Register {
		t.Fatalf("first tick: %+v, want Resolve only", due)
	}
	if due := r.Tick(now, false); due.Resolve {
		t.Fatal("a second lookup started while one is under way")
	}
	r.Resolved()
	if due := r.Tick(now, false); !due.Register || !due.STUN {
		t.Fatalf("after resolving: %+v, want Register and STUN", due)
	}
	if r.State() != Unregistered {
		t.Fatalf("state %v before the ack", r.State())
	}
}

func TestSilentRendezvousBacksOff(t *testing.T) {
	var r Registration
	r.Resolved()
	now := time.Unix(1000, 0)
	regs, _, _, _ := run(&r, &now, 30*time.Second, false)
	want := []time.Duration{0, 1 * time.Second, 3 * time.Second, 7 * time.Second, 12 * time.Second, 17 * time.Second, 22 * time.Second, 27 * time.Second}
	if len(regs) != len(want) {
		t.Fatalf("registrations at %v, want %v", regs, want)
	}
	for i := range want {
		if regs[i] != want[i] {
			t.Fatalf("registrations at %v, want %v", regs, want)
		}
	}
}

func TestRefreshAndLoss(t *testing.T) {
	var r Registration
	r.Resolved()
	now := time.Unix(1000, 0)
	r.Tick(now, false)
	if !r.Acked(now, false) || !r.Registered() {
		t.Fatal("the first ack did not register")
	}
	regs, stuns, _, lost := run(&r, &now, wire.RefreshInterval+100*time.Millisecond, false)
	if len(regs) != 1 || regs[0] != wire.RefreshInterval || len(stuns) != 0 || len(lost) != 0 {
		t.Fatalf("refresh: registrations %v, STUN %v, lost %v; want one refresh at %v and no STUN", regs, stuns, lost, wire.RefreshInterval)
	}
	if r.Acked(now, false) {
		t.Fatal("a refresh's ack reported as a new registration")
	}
	// The next refresh goes unanswered: a second after it, the
	// registration is lost and registering starts over.
	regs, _, _, lost = run(&r, &now, wire.RefreshInterval+2*time.Second, false)
	if len(lost) != 1 || lost[0] != wire.RefreshInterval+MinBackoff {
		t.Fatalf("lost at %v, want once at %v", lost, wire.RefreshInterval+MinBackoff)
	}
	if r.Registered() || len(regs) < 2 {
		t.Fatalf("registered %v with registrations %v after the loss", r.Registered(), regs)
	}
}

func TestAckWithStaleNATRegistersAgain(t *testing.T) {
	var r Registration
	r.Resolved()
	now := time.Unix(1000, 0)
	r.Tick(now, false)
	r.Acked(now, true)
	if due := r.Tick(now, false); !due.Register {
		t.Fatal("an ack for a registration with an out-of-date NAT was not followed up at once")
	}
	// A NAT learned while a registration awaits its ack waits for it.
	r.Update(now)
	if due := r.Tick(now, false); due.Register {
		t.Fatal("Update sent a second registration while one is in flight")
	}
	// RegisterNow does not wait: the ack may go to an old address.
	r.RegisterNow(now)
	if due := r.Tick(now, false); !due.Register || due.Lost {
		t.Fatalf("RegisterNow: %+v, want a registration and no loss", due)
	}
}

func TestTCPFallbackAndReturn(t *testing.T) {
	var r Registration
	r.Resolved()
	now := time.Unix(1000, 0)
	// UDP blocked: one dial at a time, STUN at each refresh, no UDP
	// registrations.
	regs, stuns, dials, _ := run(&r, &now, 10*time.Second, true)
	if len(dials) != 1 || len(regs) != 0 || len(stuns) != 1 {
		t.Fatalf("UDP blocked: dials %v, registrations %v, STUN %v; want one dial, one STUN, no registration", dials, regs, stuns)
	}
	// The dial fails: retried after 1 s, then 2 s.
	r.Dialed(now, false, true)
	_, _, dials, _ = run(&r, &now, 1500*time.Millisecond, true)
	if len(dials) != 1 || dials[0] != MinBackoff {
		t.Fatalf("dials %v after a failure, want one at %v", dials, MinBackoff)
	}
	r.Dialed(now, false, true)
	if got := r.NextDial().Sub(now); got != 2*MinBackoff {
		t.Fatalf("second retry in %v, want %v", got, 2*MinBackoff)
	}
	now = r.NextDial()
	if due := r.Tick(now, true); !due.Dial {
		t.Fatal("no dial at the retry time")
	}
	// Connected: register over TCP at once, with STUN over UDP to learn
	// whether UDP is back.
	if !r.Dialed(now, true, true) || !r.OverTCP() {
		t.Fatal("a connected stream was not kept")
	}
	if due := r.Tick(now, true); !due.Register || !due.STUN || due.Dial {
		t.Fatalf("over TCP: %+v, want Register and STUN", due)
	}
	r.Acked(now, false)
	// Refreshes over TCP ask STUN each time.
	_, stuns, _, _ = run(&r, &now, wire.RefreshInterval+100*time.Millisecond, true)
	if len(stuns) != 1 {
		t.Fatalf("STUN over a TCP registration: %v, want one per refresh", stuns)
	}
	// The stream closes: the registration is lost, and the next dial waits.
	if !r.StreamClosed(now) || r.Registered() || r.OverTCP() {
		t.Fatal("closing the stream did not lose the registration")
	}
	if due := r.Tick(now, true); due.Dial {
		t.Fatal("redialed at once after the stream closed")
	}
	// UDP works again: a stream that connects now is not kept.
	if r.Dialed(now, true, false) {
		t.Fatal("kept a TCP stream after UDP came back")
	}
}
