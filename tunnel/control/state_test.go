package control

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// stateMember is a control plane of a network member whose state file is
// statePath ("" for none), logging into log; nothing is started.
func stateMember(t *testing.T, statePath string, log *bytes.Buffer) (*Control, cert.NetworkPrivate) {
	t.Helper()
	priv, _ := key.NewPrivate()
	nk, _ := cert.NewNetworkPrivate()
	c := New(slog.New(slog.NewTextHandler(log, nil)), Config{PrivateKey: priv, Interface: "pt-state", Network: nk.Public()}, statePath, State{})
	return c, nk
}

// TestStateWarning: a member whose network state cannot be kept — no
// state directory, a directory that cannot be made, a documents or
// certificates file that cannot be replaced — says so in its view (status's state_warning), naming
// what a restart forgets, and once in its log however many documents
// come; a state that can be kept again clears it.
func TestStateWarning(t *testing.T) {
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	os.WriteFile(notADir, []byte("x"), 0o600)
	blocked := filepath.Join(dir, "blocked")
	// IFACE.documents (IFACE.certs) is a directory that is not empty: no
	// rename replaces it.
	os.MkdirAll(filepath.Join(blocked, "pt-state.documents", "x"), 0o700)
	certsBlocked := filepath.Join(dir, "certs-blocked")
	os.MkdirAll(filepath.Join(certsBlocked, "pt-state.certs", "x"), 0o700)
	for _, tc := range []struct {
		name, statePath, want string
	}{
		{"no state directory", "", "no state directory"},
		{"a state directory that cannot be made", filepath.Join(notADir, "state", "pt-state.json"), "cannot keep " + filepath.Join(notADir, "state", "pt-state.certs")},
		{"a documents file that cannot be replaced", filepath.Join(blocked, "pt-state.json"), "cannot keep " + filepath.Join(blocked, "pt-state.documents")},
		{"a certificates file that cannot be replaced", filepath.Join(certsBlocked, "pt-state.json"), "cannot keep " + filepath.Join(certsBlocked, "pt-state.certs")},
	} {
		var log bytes.Buffer
		c, nk := stateMember(t, tc.statePath, &log)
		now := time.Now()
		for seq := range uint64(3) {
			pol, _ := cert.SignPolicy(nk, seq+1, nil)
			if _, err := c.docs.add(pol, "the test", now); err != nil {
				t.Fatal(err)
			}
		}
		c.publish(now)
		w := c.View().StateWarning
		if !strings.Contains(w, tc.want) {
			t.Errorf("%s: state warning %q, want it to say %q", tc.name, w, tc.want)
		}
		for _, forgotten := range []string{"policy and revocations", "newest certificate"} {
			if !strings.Contains(w, forgotten) {
				t.Errorf("%s: state warning %q does not name %q", tc.name, w, forgotten)
			}
		}
		if n := strings.Count(log.String(), "state cannot be kept"); n != 1 {
			t.Errorf("%s: logged %d times, want once:\n%s", tc.name, n, log.String())
		}
	}

	// Kept: no warning; kept again after a failure: the warning goes.
	var log bytes.Buffer
	c, nk := stateMember(t, filepath.Join(dir, "ok", "pt-state.json"), &log)
	c.publish(time.Now())
	if w := c.View().StateWarning; w != "" {
		t.Errorf("state kept, yet warned: %q", w)
	}
	os.RemoveAll(filepath.Join(blocked, "pt-state.documents"))
	c, nk = stateMember(t, filepath.Join(blocked, "pt-state.json"), &log)
	os.Remove(filepath.Join(blocked, "pt-state.documents")) // kept at start
	os.MkdirAll(filepath.Join(blocked, "pt-state.documents", "x"), 0o700)
	pol, _ := cert.SignPolicy(nk, 1, nil)
	c.docs.add(pol, "the test", time.Now())
	if c.kept.warning == "" {
		t.Fatal("a documents file that cannot be replaced is not warned of")
	}
	os.RemoveAll(filepath.Join(blocked, "pt-state.documents"))
	pol, _ = cert.SignPolicy(nk, 2, nil)
	c.docs.add(pol, "the test", time.Now().Add(docsSaveEvery)) // kept at most once a second
	if c.kept.warning != "" {
		t.Errorf("kept again, yet warned: %q", c.kept.warning)
	}
	if b, err := os.ReadFile(filepath.Join(blocked, "pt-state.documents")); err != nil || !strings.Contains(string(b), pol.Text()) {
		t.Errorf("the policy is not kept: %v", err)
	}
}

// TestDocumentsSavedOncePerBurst: a member taking 2,000 documents in a
// burst (catching up from the rendezvous) writes IFACE.documents a few
// times, not once per document, and keeps them all by a second later; a
// shutdown keeps what is left. Before, every document rewrote and synced
// the whole file on the control goroutine: O(N²) bytes and N syncs.
func TestDocumentsSavedOncePerBurst(t *testing.T) {
	dir := t.TempDir()
	nk, _ := cert.NewNetworkPrivate()
	h := newMemberHarnessAt(t, filepath.Join(dir, "pt-harness.json"), nk)
	h.c.docs.configure(Config{Network: nk.Public()}, h.now)
	path := h.c.docs.path
	before := h.c.kept.writes[path]
	const n = 2000
	for i := range n {
		rev, err := cert.SignRevocation(nk, uint64(i+1), []key.Key{{byte(i), byte(i >> 8), 3}})
		if err != nil {
			t.Fatal(err)
		}
		h.document(rev)
	}
	burst := h.c.kept.writes[path] - before
	h.advance(2 * time.Second)
	writes := h.c.kept.writes[path] - before
	t.Logf("%d documents taken: %d writes in the burst, %d two seconds later", n, burst, writes)
	if writes > 3 {
		t.Errorf("%d writes of %s for %d documents, want at most 3", writes, path, n)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != n {
		t.Errorf("%d documents kept two seconds after the burst, want %d", lines, n)
	}
	// One more, then shut down at once: it is kept.
	rev, _ := cert.SignRevocation(nk, n+1, []key.Key{{9, 9, 9}})
	h.document(rev)
	h.c.shutdown()
	if b, _ = os.ReadFile(path); strings.Count(string(b), "\n") != n+1 {
		t.Errorf("%d documents kept after shutdown, want %d", strings.Count(string(b), "\n"), n+1)
	}
}
