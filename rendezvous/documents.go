package rendezvous

import (
	"errors"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// A network's documents: its policy and revocations, signed by the
// network key (cert.Document). Any member may hand one in (Publish); the
// rendezvous verifies it against the network key, keeps the newest policy
// and the revocations in force per network, within the network's own
// budget and publication rate (docstore.go), and sends them to the
// network's registered members, paced and again until they show they
// hold them, and to any whose registration's summary says it lacks them
// (outbox.go). A revoked member's registration, or one with a retired
// certificate, loses its membership at once, and its later ones are
// refused (cert.Revoked, cert.Retired) — also when the revocation is past
// the network's budget and not kept.
//
// The rendezvous cannot sign: what it keeps and sends, members verify
// again. What it can do is withhold; members gossip documents to each
// other in-tunnel for that (tunnel/policy).

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
	n := reg.member.net
	added, fan, err := s.docs.take(d, n.count, now)
	switch {
	case errors.Is(err, errNoRoom):
		s.Stats.DocumentsOverBudget.Add(1)
		if now.Sub(s.docLogged) >= time.Minute {
			s.docLogged = now
			s.log.Warn("a network's document is past its budget here: not kept (a revocation is acted on and sent on all the same)",
				"network", d.Network, "kind", d.KindName(), "seq", d.Seq, "budget", budget(n.count))
		}
		if d.Kind != cert.KindRevocation {
			return
		}
		// Acted on whatever it costs here: what it names may have
		// registered again since a first copy was handed in.
		s.evictNamed(n, d, now)
		if !added {
			return // sent on once, when it named something new here
		}
	case err != nil:
		if !errors.Is(err, cert.ErrOlderPolicy) {
			s.Stats.DocumentsRefused.Add(1)
		}
		return
	case !added:
		// Held already: the sender holds it too (members hand in what
		// they take), so it need not be sent to it again.
		s.out.confirm(d.Network, sender, d)
		return
	default:
		s.dirty.Store(true)
		s.Stats.Documents.Add(1)
		s.log.Info("network document taken", "network", d.Network, "kind", d.KindName(), "seq", d.Seq, "from", sender)
		if d.Kind == cert.KindRevocation {
			s.evictNamed(n, d, now)
		}
	}
	if !fan {
		// Kept, and acted on, but past the network's publication rate:
		// not fanned out now. The members' registrations' summaries show
		// they lack it (documentsFor sends it then), and its holders hand
		// it in again.
		s.Stats.DocumentsRateLimited.Add(1)
	} else if full := s.out.fanOut(n, d, now); full > 0 {
		s.Stats.DocumentsPostponed.Add(uint64(full))
	}
	s.out.confirm(d.Network, sender, d)
}

// evictNamed ends the membership of n's members whose keys or
// certificates revocation d names, whether or not it is kept here: the
// keys named are looked up, and only a revocation that retires
// certificates looks at every member, comparing fingerprints computed at
// their registration. Callers hold s.mu.
func (s *Server) evictNamed(n *network, d *cert.Document, now time.Time) {
	out := func(k key.Key, r *registration, err error) {
		s.leave(k, r)
		s.refuse(k, r, err, now)
	}
	for _, k := range d.Revoked {
		s.evictChecks++
		if r := s.peers[k]; r != nil && r.member != nil && r.member.net == n {
			out(k, r, &cert.Error{Reason: cert.Revoked, Detail: "the network key revoked " + k.String()})
		}
	}
	if len(d.Retired) == 0 {
		return
	}
	retired := make(map[[32]byte]bool, len(d.Retired))
	for _, c := range d.Retired {
		retired[c.Fingerprint] = true
	}
	for _, k := range n.byName {
		s.evictChecks++
		if r := s.peers[k]; r != nil && r.member != nil && r.member.net == n && retired[r.member.fingerprint] {
			out(k, r, &cert.Error{Reason: cert.Retired, Detail: "the network key retired certificate " + r.member.cert.Fingerprint()})
		}
	}
}

// revoked reports whether network's documents revoke k.
func (s *Server) revoked(network cert.NetworkKey, k key.Key) bool {
	return s.docs.revoked(network, k)
}

// documentsFor returns the summary of what the rendezvous holds of a
// member's network, for the ack, and queues what the member's summary says
// it may lack, to send after the ack (outbox.go). Callers hold s.mu.
func (s *Server) documentsFor(sender key.Key, reg *registration, theirs cert.Summary, now time.Time) *cert.Summary {
	network := reg.member.cert.Network
	sum, docs := s.docs.summaryFor(network, theirs)
	if len(docs) == 0 {
		s.out.settle(network, sender)
	} else if full := s.out.sendOnce(network, sender, docs, now); full > 0 {
		s.Stats.DocumentsPostponed.Add(uint64(full))
	}
	return &sum
}
