package testpoll

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records its message and ends the
// goroutine, as the real one does.
type recorder struct {
	testing.TB
	fatal string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls Eventually on a goroutine of its own, which Fatalf may end.
func run(within time.Duration, cond func() error) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(r, within, "the thing", cond)
	}()
	<-done
	return r
}

// TestEventuallyReturnsOnceTrue: it tries until the condition holds, and
// no longer.
func TestEventuallyReturnsOnceTrue(t *testing.T) {
	tries := 0
	r := run(time.Minute, func() error {
		if tries++; tries < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if r.fatal != "" || tries != 3 {
		t.Fatalf("failed %q after %d tries; want success at the third", r.fatal, tries)
	}
}

// TestEventuallyFailsAtDeadline: a condition that never holds fails the
// test with what was awaited and the last error, once the deadline passed.
func TestEventuallyFailsAtDeadline(t *testing.T) {
	start, tries := time.Now(), 0
	r := run(3*Interval, func() error {
		tries++
		return fmt.Errorf("try %d", tries)
	})
	if took := time.Since(start); took < 3*Interval {
		t.Errorf("gave up after %v, before the deadline of %v", took, 3*Interval)
	}
	want := fmt.Sprintf("the thing: not within %v: try %d", 3*Interval, tries)
	if r.fatal != want || tries < 2 {
		t.Fatalf("failure %q after %d tries; want %q", r.fatal, tries, want)
	}
}
