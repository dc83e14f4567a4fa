package rendezvous

import (
	"errors"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// A network's documents: its policy and revocations, signed by the
// network key (cert.Document). Any member may hand one in (Publish); the
// rendezvous verifies it against the network key, keeps the newest policy
// and every revocation per network (cert.Holdings), and sends them to the
// network's registered members at once and to any whose registration's
// summary says it lacks them. A revoked member's registration loses its
// membership at once, and its later ones are refused (cert.Revoked).
//
// The rendezvous cannot sign: what it keeps and sends, members verify
// again. What it can do is withhold; members gossip documents to each
// other in-tunnel for that (tunnel/policy).

// maxDocuments bounds the documents kept for all networks together
// (each at most cert.MaxDocument bytes): about 80 MB.
const maxDocuments = 1 << 16

// publish takes a document a member handed in. Callers hold s.mu.
func (s *Server) publish(sender key.Key, d *cert.Document, err error, now time.Time) {
	reg := s.peers[sender]
	switch {
	case err != nil:
		s.Stats.DocumentsRefused.Add(1)
		return
	case reg == nil || reg.member == nil || reg.member.cert.Network != d.Network:
		// Only a member hands in its network's documents: a network this
		// rendezvous serves no one of takes no room here.
		s.Stats.DocumentsRefused.Add(1)
		return
	}
	added, err := s.keep(d)
	if err != nil {
		if !errors.Is(err, cert.ErrOlderPolicy) {
			s.Stats.DocumentsRefused.Add(1)
		}
		return
	}
	if !added {
		return
	}
	s.dirty.Store(true)
	s.Stats.Documents.Add(1)
	s.log.Info("network document taken", "network", d.Network, "kind", d.KindName(), "seq", d.Seq, "from", sender)
	n := reg.member.net
	for _, k := range n.byName {
		if other := s.peers[k]; other != nil {
			s.sendDocuments(other, []*cert.Document{d}, now)
		}
	}
	for _, k := range d.Revoked {
		if r := s.peers[k]; r != nil && r.member != nil && r.member.net == n {
			s.leave(k, r)
			s.refuse(k, r, &cert.Error{Reason: cert.Revoked, Detail: "the network key revoked this member"}, now)
		}
	}
}

// errNoRoom: the rendezvous holds maxDocuments.
var errNoRoom = errors.New("documents: the rendezvous holds its most")

// keep adds a verified document to its network's holdings, within
// maxDocuments for all networks, and reports whether it was new.
// Callers hold s.mu.
func (s *Server) keep(d *cert.Document) (bool, error) {
	if s.docCount >= maxDocuments {
		return false, errNoRoom
	}
	h := s.docs[d.Network]
	if h == nil {
		h = cert.NewHoldings(d.Network)
	}
	before := held(h)
	added, err := h.Add(d)
	if added {
		s.docs[d.Network] = h
		s.docCount += held(h) - before
	}
	return added, err
}

// held counts h's documents.
func held(h *cert.Holdings) int {
	n := len(h.Revocations())
	if h.Policy() != nil {
		n++
	}
	return n
}

// revoked reports whether network's documents revoke k. Callers hold s.mu.
func (s *Server) revoked(network cert.NetworkKey, k key.Key) bool {
	h := s.docs[network]
	return h != nil && h.Revoked(k)
}

// documentsFor returns the summary of what the rendezvous holds of a
// member's network, for the ack, and what the member's summary says it
// may lack, to send after the ack: its Time must be below theirs, or the
// member takes the ack for a replay. Callers hold s.mu.
func (s *Server) documentsFor(reg *registration, theirs cert.Summary) (*cert.Summary, []*cert.Document) {
	h := s.docs[reg.member.cert.Network]
	if h == nil {
		return &cert.Summary{}, nil
	}
	sum := h.Summary()
	return &sum, h.For(theirs)
}

// sendDocuments sends docs to reg. Callers hold s.mu.
func (s *Server) sendDocuments(reg *registration, docs []*cert.Document, now time.Time) {
	for _, d := range docs {
		s.send(reg, &wire.Document{Time: s.clock.Next(uint64(now.UnixNano())), Doc: d.Bytes()})
	}
}
