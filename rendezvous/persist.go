package rendezvous

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/rendezvous/wire/statefile"
)

// Registrations outlive a restart of the rendezvous: Save writes them to a
// file (the CLI does on shutdown, and every few seconds after a change),
// and Load reads them back before serving. Peers registered before are
// then introduced and relayed at once, instead of after their next
// refresh, up to 25 s later — and a peer whose tunnel is direct never
// notices the restart. Only UDP registrations are kept: a TCP peer's
// connection ends with the process, and the peer reconnects by itself.
//
// The networks' documents (the docStore's) are kept too, and verified
// again on load. The file holds no secret: shared keys are computed again
// on load.

// savedState is the file: an object since documents came; a bare array
// of registrations before, which Load still reads.
type savedState struct {
	Registrations []savedRegistration `json:"registrations"`
	Documents     [][]byte            `json:"documents,omitempty"`
	// Orphaned: since when each network of Documents without a member
	// registered has had none, so that a restart does not make its
	// orphanTTL start again. Networks not named are orphaned since the
	// load, if no member registers with them.
	Orphaned []savedOrphan `json:"orphaned,omitempty"`
	// Newest: each network's newest certificate per member key
	// (cert.Newest.AppendText), verified again on load.
	Newest []savedNewest `json:"newest,omitempty"`
	// MemberHours: what each network's members earned its documents
	// here (docStore: orphans are evicted by bytes per member-hour),
	// so that a restart does not make a real network's cheap to evict.
	MemberHours map[string]float64 `json:"member_hours,omitempty"`
}

type savedNewest struct {
	Network string `json:"network"`
	Text    string `json:"text"`
}

type savedOrphan struct {
	Network string    `json:"network"`
	Since   time.Time `json:"since"`
}

type savedRegistration struct {
	Key        key.Key          `json:"key"`
	Local      netip.AddrPort   `json:"local"` // the listen address it talked to
	Endpoint   netip.AddrPort   `json:"endpoint"`
	NAT        byte             `json:"nat"`
	Candidates []netip.AddrPort `json:"candidates"`
	Wants      []key.Key        `json:"wants"`
	LastTime   uint64           `json:"last_time"`      // its newest message's Time
	Cert       []byte           `json:"cert,omitempty"` // a member's certificate, checked again on load
}

// replayFloor: on load, a peer's replay guard starts no earlier than this
// before the load, since messages sent after the last save could
// otherwise be replayed. A peer whose clock runs more than this behind
// the server's waits that much longer to be heard again.
const replayFloor = 30 * time.Second

// persistence reads and writes the state file: the registrations
// through the registry (registrationStore), the documents through the
// store. dirty, set by both, says the file is behind.
type persistence struct {
	registrations registrationStore
	docs          *docStore
	dirty         atomic.Bool
}

// registrationStore is what persistence asks of the registry.
type registrationStore interface {
	// saved returns the UDP registrations as the file keeps them.
	saved() []savedRegistration
	// restore takes registrations from the file, for the sockets in
	// byLocal, and returns how many it took and what they send.
	restore(saved []savedRegistration, byLocal map[netip.AddrPort]*net.UDPConn, now time.Time) (int, outgoing)
}

// Dirty reports whether registrations came, went or moved since the last
// Save.
func (s *Server) Dirty() bool { return s.state.dirty.Load() }

// Save writes the UDP registrations to path, atomically, mode 0600.
func (s *Server) Save(path string) error { return s.state.save(path) }

// Load reads registrations Save wrote, for the sockets in conns (matched by
// local address), before Serve. A missing file is no error. It returns how
// many registrations it restored.
func (s *Server) Load(path string, conns []*net.UDPConn) (int, error) {
	n, out, err := s.state.load(path, conns)
	s.send(out)
	return n, err
}

func (p *persistence) save(path string) error {
	p.dirty.Store(false)
	st := savedState{Registrations: p.registrations.saved(), MemberHours: map[string]float64{}}
	p.docs.each(func(nk cert.NetworkKey, held stored) {
		if held.memberSecs > 0 {
			st.MemberHours[nk.String()] = held.memberSecs / 3600
		}
		for _, d := range held.docs {
			st.Documents = append(st.Documents, d.Bytes())
		}
		if !held.orphaned.IsZero() {
			st.Orphaned = append(st.Orphaned, savedOrphan{Network: nk.String(), Since: held.orphaned})
		}
		if len(held.newest) > 0 {
			st.Newest = append(st.Newest, savedNewest{Network: nk.String(), Text: string(held.newest)})
		}
	})
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return statefile.Write(path, b)
}

func (p *persistence) load(path string, conns []*net.UDPConn) (int, outgoing, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, outgoing{}, nil
	}
	if err != nil {
		return 0, outgoing{}, err
	}
	var st savedState
	if trimmed := bytes.TrimSpace(b); len(trimmed) > 0 && trimmed[0] == '[' {
		err = json.Unmarshal(b, &st.Registrations)
	} else {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		return 0, outgoing{}, err
	}
	byLocal := make(map[netip.AddrPort]*net.UDPConn)
	for _, c := range conns {
		if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
			byLocal[a.AddrPort()] = c
		}
	}
	now := time.Now()
	orphaned := make(map[cert.NetworkKey]time.Time, len(st.Orphaned))
	for _, o := range st.Orphaned {
		if nk, err := cert.ParseNetworkKey(o.Network); err == nil && o.Since.Before(now) {
			orphaned[nk] = o.Since
		}
	}
	for _, raw := range st.Documents {
		// Verified again: the file is not trusted with what members
		// enforce. Orphaned until a member registers (join adopts it).
		if d, err := cert.ParseDocument(raw); err == nil {
			since, ok := orphaned[d.Network]
			if !ok {
				since = now
			}
			p.docs.restore(d, since)
		}
	}
	for _, sn := range st.Newest {
		if nk, err := cert.ParseNetworkKey(sn.Network); err == nil {
			since, ok := orphaned[nk]
			if !ok {
				since = now
			}
			p.docs.restoreNewest(nk, sn.Text, since, now) // bad lines are dropped
		}
	}
	for network, hours := range st.MemberHours {
		if nk, err := cert.ParseNetworkKey(network); err == nil {
			p.docs.restoreEarned(nk, hours*3600)
		}
	}
	n, out := p.registrations.restore(st.Registrations, byLocal, now)
	return n, out, nil
}

// saved is registrationStore.saved.
func (r *registry) saved() []savedRegistration {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]savedRegistration, 0, len(r.peers))
	for k, rec := range r.peers {
		conn, ok := rec.egress.(*net.UDPConn)
		if !ok {
			continue
		}
		sr := savedRegistration{Key: k, Endpoint: rec.endpoint, NAT: rec.nat, Candidates: rec.candidates, LastTime: r.seen[k].time}
		if a, ok := conn.LocalAddr().(*net.UDPAddr); ok {
			sr.Local = a.AddrPort()
		}
		for w := range rec.wants {
			sr.Wants = append(sr.Wants, w)
		}
		if rec.member != nil {
			sr.Cert = rec.member.cert.Bytes()
		}
		out = append(out, sr)
	}
	return out
}

// restore is registrationStore.restore.
func (r *registry) restore(saved []savedRegistration, byLocal map[netip.AddrPort]*net.UDPConn, now time.Time) (n int, out outgoing) {
	floor := uint64(now.Add(-replayFloor).UnixNano())
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sr := range saved {
		conn := byLocal[sr.Local]
		if conn == nil || !sr.Endpoint.IsValid() || !r.limits.roomFor(len(r.peers), 0, true) {
			continue
		}
		shared, err := r.secret.SharedKey(sr.Key)
		if err != nil {
			continue
		}
		rec := &peerRecord{
			destination: destination{egress: conn, endpoint: sr.Endpoint, shared: shared},
			nat:         sr.NAT,
			candidates:  sr.Candidates,
			wants:       make(map[key.Key]struct{}, len(sr.Wants)),
			expires:     now.Add(r.ttl),
		}
		for _, w := range sr.Wants {
			rec.wants[w] = struct{}{}
		}
		if sr.Cert != nil {
			// Verified again: the file is not trusted with membership.
			// One that fails now registers without it until its refresh.
			if c, err := cert.Parse(sr.Cert); err == nil {
				if c, err = r.checkParsed(sr.Key, c.Network, c, now); err == nil && r.admitCert(c, now) == nil {
					r.join(sr.Key, rec, c, now, &out)
				}
			}
		}
		r.peers[sr.Key] = rec
		r.byEndpoint[source{conn, sr.Endpoint}] = sr.Key
		r.seen[sr.Key] = lastSeen{time: max(sr.LastTime, floor), at: now}
		n++
	}
	return n, out
}
