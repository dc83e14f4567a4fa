package rendezvous

import (
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// takeDoc is docStore.take without whether it may be fanned out.
func takeDoc(st *docStore, d *cert.Document, members int, now time.Time) (bool, error) {
	added, _, err := st.take(d, members, now)
	return added, err
}

// fillStore makes nk's documents in st reach budget(members) with
// single-key revocations of seq from seq, beyond any rate.
func fillStore(t *testing.T, st *docStore, nk cert.NetworkPrivate, members int, seq uint64) {
	t.Helper()
	for ; ; seq++ {
		var k key.Key
		rand.Read(k[:])
		rev, _ := cert.SignRevocation(nk, seq, []key.Key{k})
		if _, size := st.stats(); size+len(rev.Bytes()) > budget(members) {
			return
		}
		st.restore(rev, time.Time{})
	}
}

// TestCoveredReplayCostsNothing: at its budget, a network's member
// replaying revocations that a cumulative one covers (held by coverage,
// not by bytes) spends none of the network's publication tokens, no
// overflow entry and no rebuild: the owner's next revocation is acted on.
// Before: the tokens were spent, each replay rebuilt the holdings, the
// retired certificates took overflow entries, and the owner's revocation
// was refused as past the rate.
func TestCoveredReplayCostsNothing(t *testing.T) {
	st := newDocStore()
	nk := newNetwork(t)
	now := time.Now()
	var olds []*cert.Document
	var all []cert.RetiredCert
	for i := range 40 {
		c := cert.RetiredCert{NotAfter: now.Add(time.Hour)}
		rand.Read(c.Fingerprint[:])
		all = append(all, c)
		rev, err := cert.SignRevocations(nk, uint64(i+1), nil, []cert.RetiredCert{c})
		if err != nil {
			t.Fatal(err)
		}
		st.restore(rev[0], time.Time{})
		olds = append(olds, rev[0])
	}
	cum, err := cert.SignRevocations(nk, 100, nil, all)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range cum {
		st.restore(d, time.Time{})
	}
	fillStore(t, st, nk, 1, 200)
	rebuilt := st.rebuilds
	for range 5 {
		for _, d := range olds {
			if added, err := takeDoc(st, d, 1, now); added || err != nil {
				t.Fatalf("a covered revocation replayed: new %v, %v", added, err)
			}
		}
	}
	n := st.nets[nk.Public()]
	if n.pub.Tokens() < pubBurst-1 || len(n.overflowCerts) != 0 || st.rebuilds != rebuilt {
		t.Fatalf("%d replays of covered revocations cost: %.0f of %v tokens left, %d overflow entries, %d rebuilds",
			5*len(olds), n.pub.Tokens(), pubBurst, len(n.overflowCerts), st.rebuilds-rebuilt)
	}
	victim := key.Key{0xee}
	rev, _ := cert.SignRevocation(nk, 1000, []key.Key{victim})
	if added, err := takeDoc(st, rev, 1, now); !added || err != errNoRoom || !st.revoked(nk.Public(), victim) {
		t.Fatalf("the owner's revocation after the replays: new %v, %v, revoked %v", added, err, st.revoked(nk.Public(), victim))
	}
}

// TestNoFitReplayCheap: at its budget, a document that does not fit,
// handed in again and again, rebuilds the network's holdings once, and an
// older policy none. Before: a rebuild per message (15 ms at 18,000
// revocations, under the server's lock).
func TestNoFitReplayCheap(t *testing.T) {
	st := newDocStore()
	nk := newNetwork(t)
	now := time.Now()
	const members = 100
	pol, _ := cert.SignPolicy(nk, 5, nil)
	st.restore(pol, time.Time{})
	fillStore(t, st, nk, members, 1)
	var rules []cert.Rule
	for i := range 20 {
		rules = append(rules, cert.Rule{From: []cert.Selector{{Kind: cert.SelectGroup, Label: strings.Repeat("g", 20) + string(rune('a'+i))}},
			To: []cert.Selector{{Kind: cert.SelectAny}}, Allow: []cert.Service{{Proto: cert.ProtoTCP, From: 22, To: 22}}})
	}
	older, _ := cert.SignPolicy(nk, 4, rules)
	newer, _ := cert.SignPolicy(nk, 6, rules)
	rebuilt := st.rebuilds
	start := time.Now()
	for range 100 {
		if _, err := takeDoc(st, older, members, now); err != cert.ErrOlderPolicy {
			t.Fatalf("an older policy: %v", err)
		}
		if _, err := takeDoc(st, newer, members, now); err != errNoRoom {
			t.Fatalf("a newer policy past the budget: %v", err)
		}
	}
	t.Logf("200 documents past the budget of %d bytes took %v", budget(members), time.Since(start))
	if got := st.rebuilds - rebuilt; got > 1 {
		t.Fatalf("200 documents past the budget rebuilt the holdings %d times", got)
	}
}

// TestRevocationWorkNotPerMember: a revocation of one key in a network of
// 2,000 looks at the one member it names, not at every member; one that
// retires a certificate evicts the member holding it. Before: 2,000
// members looked at (a lock and two SHA-256 each) per revocation.
func TestRevocationWorkNotPerMember(t *testing.T) {
	s, _, _ := startServer(t)
	nk := newNetwork(t)
	now := time.Now()
	const members = 2000
	keys := make([]key.Key, members)
	for i := range keys {
		keys[i] = addMember(t, s, nk, i, now)
	}
	rev, _ := cert.SignRevocation(nk, 1, []key.Key{keys[1]})
	s.reg.mu.Lock()
	checks := s.reg.evictChecks
	s.reg.publish(keys[0], rev, nil, now, &outgoing{})
	checks = s.reg.evictChecks - checks
	gone := s.reg.peers[keys[1]].member == nil
	retire := s.reg.peers[keys[2]].member.cert
	s.reg.mu.Unlock()
	if !gone || checks > 1 {
		t.Fatalf("a revocation of one key in a network of %d: evicted %v, %d members looked at", members, gone, checks)
	}
	revs, _ := cert.SignRevocations(nk, 2, nil, []cert.RetiredCert{cert.RetiredOf(retire)})
	s.reg.mu.Lock()
	s.reg.publish(keys[0], revs[0], nil, now, &outgoing{})
	gone = s.reg.peers[keys[2]].member == nil
	s.reg.mu.Unlock()
	if !gone {
		t.Fatal("a revocation retiring a member's certificate left it a member")
	}
}

// TestOrphanEvictionSparesRealNetwork: past the orphans' bound, a
// stranger's one-member networks, made and left within a minute, go
// before a real network of 50 members registered for 8 hours and all
// offline since, though it was orphaned first. Before: the one orphaned
// longest went first, the real network.
func TestOrphanEvictionSparesRealNetwork(t *testing.T) {
	st := newDocStore()
	st.maxOrphans = 64 << 10
	t0 := time.Now()
	real := newNetwork(t)
	fillStore(t, st, real, 50, 1) // 21 KiB
	st.members(real.Public(), 50, t0)
	st.members(real.Public(), 0, t0.Add(8*time.Hour))
	st.orphan(real.Public(), t0.Add(8*time.Hour))
	at := t0.Add(8*time.Hour + time.Minute)
	var strangers []cert.NetworkKey
	for range 10 {
		nk := newNetwork(t)
		for i := range 40 {
			var k key.Key
			rand.Read(k[:])
			rev, _ := cert.SignRevocation(nk, uint64(i+1), []key.Key{k})
			st.restore(rev, time.Time{})
		}
		st.members(nk.Public(), 1, at)
		st.members(nk.Public(), 0, at.Add(time.Minute))
		st.orphan(nk.Public(), at.Add(time.Minute))
		strangers = append(strangers, nk.Public())
	}
	st.prune(at.Add(2 * time.Minute))
	held := 0
	for _, nk := range strangers {
		if st.nets[nk] != nil {
			held++
		}
	}
	if st.nets[real.Public()] == nil {
		t.Fatalf("the real network's documents went; %d of the stranger's %d networks held", held, len(strangers))
	}
	if st.orphanBytes > st.maxOrphans {
		t.Fatalf("orphans hold %d bytes, over %d", st.orphanBytes, st.maxOrphans)
	}
	t.Logf("%d of the stranger's %d networks held, and the real one", held, len(strangers))
}

// TestMemberHoursSurviveRestart: what a network's members earned it here
// is in the state file, so a restart does not make a real network's
// documents the cheapest to evict.
func TestMemberHoursSurviveRestart(t *testing.T) {
	priv, _ := key.NewPrivate()
	first := NewServer(Config{PrivateKey: priv, Logger: slog.New(slog.DiscardHandler)})
	defer first.Close()
	nk := newNetwork(t)
	rev, _ := cert.SignRevocation(nk, 1, []key.Key{{7}})
	first.docs.store.restore(rev, time.Time{})
	t0 := time.Now().Add(-2 * time.Hour)
	first.docs.store.members(nk.Public(), 5, t0)
	first.docs.store.members(nk.Public(), 0, t0.Add(time.Hour))
	first.docs.store.orphan(nk.Public(), t0.Add(time.Hour))
	state := filepath.Join(t.TempDir(), "state")
	if err := first.Save(state); err != nil {
		t.Fatal(err)
	}
	second := NewServer(Config{PrivateKey: priv, Logger: slog.New(slog.DiscardHandler)})
	defer second.Close()
	if _, err := second.Load(state, nil); err != nil {
		t.Fatal(err)
	}
	if got := second.docs.store.nets[nk.Public()].memberSecs; got != 5*3600 {
		t.Fatalf("after a restart the network earned %v member-seconds, want %v", got, 5*3600)
	}
}

// TestOverflowSizedByBudget: past its budget, a network's revocations are
// acted on for as many entries as its budget allows (budget/40: 211 for
// a network of one), not 32.
func TestOverflowSizedByBudget(t *testing.T) {
	st := newDocStore()
	nk := newNetwork(t)
	now := time.Now()
	fillStore(t, st, nk, 1, 1)
	keys := make([]key.Key, 150)
	for i := range keys {
		rand.Read(keys[i][:])
	}
	revs, err := cert.SignRevocations(nk, 1000, keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range revs {
		if _, err := takeDoc(st, d, 1, now); err != errNoRoom {
			t.Fatalf("a revocation past the budget: %v", err)
		}
	}
	refused := 0
	for _, k := range keys {
		if st.revoked(nk.Public(), k) {
			refused++
		}
	}
	if refused != len(keys) {
		t.Fatalf("%d of %d keys revoked past the budget are refused", refused, len(keys))
	}
}
