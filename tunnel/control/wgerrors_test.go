package control

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// logTo sends the control plane's log to a buffer the test reads.
func (h *harness) logTo() *bytes.Buffer {
	var b bytes.Buffer
	h.setLog(slog.New(slog.NewTextHandler(&b, nil)))
	return &b
}

// TestRepointFailureLogged: a route change WireGuard refuses is said, and
// the route is taken all the same.
func TestRepointFailureLogged(t *testing.T) {
	h := newHarness(t)
	log := h.logTo()
	h.c.wg.(*fakeWireGuard).repointErr = errors.New("ipc refused")
	h.register()
	h.introduce(peerAddr)
	if r := h.peer().ep.Route(); !r.Relay || r.Dst != rvAddr {
		t.Fatalf("route %+v right after the intro, want the relay", r)
	}
	if s := log.String(); !strings.Contains(s, "cannot point WireGuard at the peer's new route") || !strings.Contains(s, "ipc refused") {
		t.Errorf("the failed Repoint is not in the log:\n%s", s)
	}
}

// TestRemoveMemberFailureLogged: a member WireGuard will not let go is
// said, and let go by the control plane all the same.
func TestRemoveMemberFailureLogged(t *testing.T) {
	h := newMemberHarness(t)
	log := h.logTo()
	h.wg().removeErr = errors.New("ipc refused")
	a, _ := key.NewPrivate()
	h.introduceMember(a.Public(), h.sign(h.net, a.Public(), "a", "100.64.0.2/24", h.now, MemberIdle/2))
	h.advance(MemberIdle)
	if h.c.peers[a.Public()] != nil {
		t.Error("the member whose certificate expired is still there")
	}
	if s := log.String(); !strings.Contains(s, "cannot remove the member from WireGuard") || !strings.Contains(s, "ipc refused") {
		t.Errorf("the failed RemoveMember is not in the log:\n%s", s)
	}
}
