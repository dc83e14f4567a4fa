package rendezvous

import (
	"maps"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// What the registry does with the networks' documents:
// it checks who hands one in, acts on revocations, names the members a
// new one is fanned out to, queues what a member's summary says it lacks,
// and tells the delivery where members are.

// publish takes a document a member handed in. Callers hold r.mu.
func (r *registry) publish(sender key.Key, d *cert.Document, err error, now time.Time, out *outgoing) {
	rec := r.peers[sender]
	switch {
	case err != nil:
		r.stats.DocumentsRefused.Add(1)
		return
	case rec == nil || rec.member == nil || rec.member.cert.Network != d.Network:
		// Only a member hands in its network's documents: a network this
		// rendezvous serves no one of takes no room here.
		r.stats.DocumentsRefused.Add(1)
		return
	}
	n := rec.member.net
	p := r.docs.take(sender, d, n.count, now)
	if p.evict {
		r.evictNamed(n, d, now, out)
	}
	if p.fan {
		r.docs.fanOut(n.key, maps.Values(n.byName), d, now)
	}
	if p.confirm {
		r.docs.confirm(d.Network, sender, d)
	}
}

// evictNamed ends the membership of n's members whose keys or
// certificates revocation d names, whether or not it is kept here: the
// keys named are looked up, and only a revocation that retires
// certificates looks at every member, comparing fingerprints computed at
// their registration. Callers hold r.mu.
func (r *registry) evictNamed(n *network, d *cert.Document, now time.Time, out *outgoing) {
	evict := func(k key.Key, rec *peerRecord, err error) {
		r.leave(k, rec)
		r.refuse(k, rec, err, now, out)
	}
	for _, k := range d.Revoked {
		r.evictChecks++
		if rec := r.peers[k]; rec != nil && rec.member != nil && rec.member.net == n {
			evict(k, rec, &cert.Error{Reason: cert.Revoked, Detail: "the network key revoked " + k.String()})
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
		r.evictChecks++
		if rec := r.peers[k]; rec != nil && rec.member != nil && rec.member.net == n && retired[rec.member.fingerprint] {
			evict(k, rec, &cert.Error{Reason: cert.Retired, Detail: "the network key retired certificate " + rec.member.cert.Fingerprint()})
		}
	}
}

// documentsFor returns the summary of what the rendezvous holds of a
// member's network, for the ack, and has what the member's summary says
// it may lack queued once the ack is sent (outgoing.lacking). Callers
// hold r.mu.
func (r *registry) documentsFor(sender key.Key, rec *peerRecord, theirs cert.Summary, out *outgoing) *cert.Summary {
	network := rec.member.cert.Network
	sum, docs := r.docs.lacks(network, sender, theirs)
	if len(docs) > 0 {
		out.lacking = &lacking{network: network, member: sender, docs: docs}
	}
	return &sum
}

// destinations finds where each delivery's member is, under one read
// lock: dst[i] is batch[i]'s, with no egress if its member is no longer
// registered in that network (memberDirectory).
func (r *registry) destinations(batch []delivery, dst []destination) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for i, b := range batch {
		rec := r.peers[b.member]
		if rec == nil || rec.member == nil || rec.member.cert.Network != b.network {
			continue
		}
		dst[i] = rec.destination
	}
}
