//go:build linux

package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestFrozenPeerBehindHardNAT: a laptop suspended, a paused VM — the peer's
// process frozen (SIGSTOP) for 200 s, longer than WireGuard's 180-s
// session and the NATs' 30-s UDP timeouts — behind easy/hard NATs, each
// side in a lab of its own. After SIGCONT, pings are answered both ways within a
// second and the path is direct again within 3 s.
func TestFrozenPeerBehindHardNAT(t *testing.T) {
	t.Parallel()
	freeze := 200 * time.Second
	if s, err := strconv.Atoi(os.Getenv("PUNCHTUN_FREEZE_S")); err == nil && s > 0 {
		freeze = time.Duration(s) * time.Second // shorter while working on it; CI runs 200 s
	}
	// Each side frozen in a lab of its own, both at once: the freezes are
	// nearly all of the test's time.
	for _, side := range []struct{ nat, prefix string }{{"hard", "ptfzh"}, {"easy", "ptfze"}} {
		t.Run(side.nat+"-side-frozen", func(t *testing.T) {
			t.Parallel()
			l := idleLab(t, side.prefix, "easy", "hard")
			for _, router := range []string{"nata", "natb"} {
				for _, s := range []string{"nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"} {
					l.run(router, "sysctl", "-qw", fmt.Sprintf("net.netfilter.%s=%d", s, 30))
				}
			}
			rv := l.newRendezvous("rendezvous", rendezvousAddr, []string{rendezvousAddr, rendezvousAddr2}, "")
			a, b, pa, pb := l.pair(side.prefix+"a", "a1", side.prefix+"b", "b1", "direct", rv)
			frozen := map[string]struct {
				p, other *peerSpec
				proc     *proc
			}{"hard": {b, a, pb}, "easy": {a, b, pa}}[side.nat]
			frozen.proc.cmd.Process.Signal(syscall.SIGSTOP)
			// The freeze is the test's parameter; the thaw and what follows
			// are the measurement.
			quietAt(t, time.Now().Add(freeze), func() {
				frozen.proc.cmd.Process.Signal(syscall.SIGCONT)
				t0 := time.Now()
				out := l.answeredWithin(frozen.p, frozen.other, t0, 20*time.Second)
				in := l.answeredWithin(frozen.other, frozen.p, t0, 20*time.Second)
				var direct time.Duration
				eventually(t, 20*time.Second, "direct again", func() error {
					for _, p := range []*peerSpec{a, b} {
						st, err := l.status(p)
						if err != nil {
							return err
						}
						if st.Peers[0].Path != "direct" {
							return fmt.Errorf("%s: path %s", p.iface, st.Peers[0].Path)
						}
					}
					direct = time.Since(t0)
					return nil
				})
				t.Logf("%s side frozen %v: answered %v → / %v ← after SIGCONT, direct again after %v",
					side.nat, freeze, out.Round(time.Millisecond), in.Round(time.Millisecond), direct.Round(time.Millisecond))
				if out > time.Second || in > time.Second {
					t.Errorf("%s side frozen %v: answered %v and %v after SIGCONT, want within 1 s", side.nat, freeze, out, in)
				}
				if direct > 3*time.Second {
					t.Errorf("%s side frozen %v: direct again after %v, want within 3 s", side.nat, freeze, direct)
				}
			})
		})
	}
}

// frozenSide is one side of freezeLab's pair, to freeze.
type frozenSide struct {
	p    *peerSpec
	proc *proc
	nat  string
}

// freezeLab is an easy/hard pair, direct, behind NATs that forget UDP
// flows after 30 s; sides lists the hard side, then the easy one.
func freezeLab(t *testing.T, prefix string) (l *lab, a, b *peerSpec, sides []frozenSide) {
	l = newLab(t, prefix, "easy", "hard")
	for _, router := range []string{"nata", "natb"} {
		for _, s := range []string{"nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"} {
			l.run(router, "sysctl", "-qw", fmt.Sprintf("net.netfilter.%s=%d", s, 30))
		}
	}
	rv := l.newRendezvous("rendezvous", rendezvousAddr, []string{rendezvousAddr, rendezvousAddr2}, "")
	a, b, pa, pb := l.pair(prefix+"a", "a1", prefix+"b", "b1", "direct", rv)
	return l, a, b, []frozenSide{{b, pb, "hard"}, {a, pa, "easy"}}
}

// freeze stops s's process for d, continues it at t0, and returns how long
// after t0 pings were answered from it to its peer other (out) and back
// (in).
func (l *lab) freeze(s frozenSide, other *peerSpec, d time.Duration) (t0 time.Time, out, in time.Duration) {
	l.t.Helper()
	s.proc.cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(d) // the freeze is the test's parameter
	s.proc.cmd.Process.Signal(syscall.SIGCONT)
	t0 = time.Now()
	return t0, l.answeredWithin(s.p, other, t0, 20*time.Second), l.answeredWithin(other, s.p, t0, 20*time.Second)
}
