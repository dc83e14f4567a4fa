package rendezvous

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Networks: members register with a certificate their network's key
// signed (package wire/cert). The rendezvous checks it — signed by the
// network it names, valid now, for the key that sealed the registration,
// no other member's address or name — and groups members by network key;
// a network exists while it has a member, so no config names it (an
// allow-list, Config.Networks, may restrict which are served). Members of
// one network are introduced to each other and relayed for as peers that
// list each other are, and may look each other up by address or name.
//
// The rendezvous verifies; it cannot sign. Members check each other's
// certificates themselves, so a rendezvous that lies can refuse service
// but never add a member.

// Defaults of the networks' bounds in Config.
const (
	// DefaultMaxMembers bounds one network's registered members, so that
	// one network cannot fill the peer table for everyone.
	DefaultMaxMembers = 10_000
	// DefaultLookupRate is the lookups per second one member may have
	// answered (burst twice as many): a member looks up each new
	// destination once, and a scan of the network's prefix is slowed,
	// not served.
	DefaultLookupRate = 20
)

// network is one network's registered members. Callers hold r.mu.
type network struct {
	key    cert.NetworkKey
	byAddr map[netip.Addr]key.Key
	byName map[string]key.Key
	count  int
}

// membership is what a registration holds of its network.
type membership struct {
	cert *cert.Cert
	net  *network
	// fingerprint is cert's, computed once: what a revocation retiring
	// certificates is compared with (evictNamed).
	fingerprint [32]byte
}

// checkCert parses and verifies a registration's certificate, outside the
// registry's lock: a signature check costs about 50 µs. A certificate the
// registration already holds is not verified again, only its validity.
func (r *registry) checkCert(sender key.Key, network cert.NetworkKey, raw []byte, now time.Time) (*cert.Cert, error) {
	r.mu.RLock()
	var held *cert.Cert
	if rec := r.peers[sender]; rec != nil && rec.member != nil && bytes.Equal(rec.member.cert.Bytes(), raw) {
		held = rec.member.cert
	}
	r.mu.RUnlock()
	if held == nil {
		var err error
		if held, err = cert.Parse(raw); err != nil {
			return nil, err
		}
	}
	return r.checkParsed(sender, network, held, now)
}

// checkParsed checks a parsed certificate against the network the member
// named, the allow-list, the clock and the sender.
func (r *registry) checkParsed(sender key.Key, network cert.NetworkKey, c *cert.Cert, now time.Time) (*cert.Cert, error) {
	if c.Network != network {
		return nil, &cert.Error{Reason: cert.OtherNetwork, Detail: "signed by network " + c.Network.String() + ", registered for " + network.String()}
	}
	if r.allowNetworks != nil && !r.allowNetworks[c.Network] {
		return nil, &cert.Error{Reason: cert.OtherNetwork, Detail: "this rendezvous does not serve network " + c.Network.String()}
	}
	if err := c.Check(network, now); err != nil {
		return nil, err
	}
	if c.Member != sender {
		return nil, &cert.Error{Reason: cert.KeyMismatch, Detail: "for key " + c.Member.String()}
	}
	return c, nil
}

// admitCert says why c may not be a member of its network by what the
// network key signed and the certificates seen (documents.refuses); nil
// when it may. Callers hold r.mu.
func (r *registry) admitCert(c *cert.Cert, now time.Time) error {
	members := 0
	if n := r.networks[c.Network]; n != nil {
		members = n.count
	}
	return r.docs.refuses(c, members, now)
}

// join makes rec a member with c, or says why not. A member registered
// with an older certificate (an earlier NotBefore) that holds one of c's
// addresses or its name gives way: the owner moved them to c. Callers
// hold r.mu.
func (r *registry) join(sender key.Key, rec *peerRecord, c *cert.Cert, now time.Time, out *outgoing) error {
	if rec.member != nil && rec.member.cert.Network == c.Network {
		r.unindex(rec.member, sender)
	} else {
		r.leave(sender, rec)
	}
	n := r.networks[c.Network]
	if n == nil {
		n = &network{key: c.Network, byAddr: map[netip.Addr]key.Key{}, byName: map[string]key.Key{}}
	}
	if rec.member == nil && !r.limits.memberRoom(n.count) {
		return &cert.Error{Reason: cert.NetworkFull, Detail: "the network has its most members here"}
	}
	older := map[key.Key]string{}
	overlap := func(k key.Key, held bool, what string) error {
		if !held || k == sender {
			return nil
		}
		if o := r.peers[k]; o != nil && o.member != nil && o.member.cert.NotBefore.Before(c.NotBefore) {
			older[k] = what
			return nil
		}
		return &cert.Error{Reason: cert.Overlap, Detail: what + " is another member's: " + k.String()}
	}
	k, held := n.byName[c.Name]
	if err := overlap(k, held, "name "+c.Name); err != nil {
		return err
	}
	for _, p := range c.Addresses {
		k, held := n.byAddr[p.Addr()]
		if err := overlap(k, held, "address "+p.Addr().String()); err != nil {
			return err
		}
	}
	for k, what := range older {
		o := r.peers[k]
		r.leave(k, o)
		r.refuse(k, o, &cert.Error{Reason: cert.Overlap, Detail: what + " moved to a newer certificate, of " + sender.String()}, now, out)
	}
	if rec.member == nil {
		rec.member = &membership{net: n}
		n.count++
		r.docs.joined(c.Network, n.count, now)
		r.networks[c.Network] = n
	}
	if rec.member.cert != c {
		rec.member.cert, rec.member.fingerprint = c, c.FingerprintBytes()
	}
	n.byName[c.Name] = sender
	for _, p := range c.Addresses {
		n.byAddr[p.Addr()] = sender
	}
	return nil
}

// unindex takes a member's name and addresses out of its network's
// indexes. Callers hold r.mu.
func (r *registry) unindex(m *membership, k key.Key) {
	if m.net.byName[m.cert.Name] == k {
		delete(m.net.byName, m.cert.Name)
	}
	for _, p := range m.cert.Addresses {
		if m.net.byAddr[p.Addr()] == k {
			delete(m.net.byAddr, p.Addr())
		}
	}
}

// leave ends rec's membership, if any; a network without members is
// forgotten. Callers hold r.mu.
func (r *registry) leave(k key.Key, rec *peerRecord) {
	m := rec.member
	if m == nil {
		return
	}
	r.unindex(m, k)
	rec.member = nil
	r.intros.forget(k)
	m.net.count--
	r.docs.left(m.net.key, k, m.net.count, time.Now())
	if m.net.count == 0 {
		delete(r.networks, m.net.key)
	}
}

// refuse tells a peer why its certificate is not taken, counts it, and
// logs it once per peer and reason. Callers hold r.mu.
func (r *registry) refuse(sender key.Key, rec *peerRecord, err error, now time.Time, out *outgoing) {
	reason := cert.ReasonOf(err)
	if int(reason) < len(r.stats.Refused) {
		r.stats.Refused[reason].Add(1)
	}
	if r.refusedLogged[sender] != reason {
		if len(r.refusedLogged) >= limiterEntries {
			clear(r.refusedLogged)
		}
		r.refusedLogged[sender] = reason
		r.log.Warn("member refused", "peer", sender, "reason", reason.String(), "err", err)
	}
	out.add(rec.destination, &wire.Refused{Time: r.clock.stamp(now), Reason: byte(reason)})
}

// sameNetwork reports whether a and b are members of one network.
func sameNetwork(a, b *peerRecord) bool {
	return a.member != nil && b.member != nil && a.member.net == b.member.net
}

// lookup answers a member's Lookup: an introduction to the member that
// holds the address or name, a miss, or nothing for a non-member or one
// over its rate. Callers hold r.mu.
func (r *registry) lookup(asker key.Key, m *wire.Lookup, now time.Time, out *outgoing) {
	a := r.peers[asker]
	if a == nil || a.member == nil {
		r.stats.DropNotMutual.Add(1)
		return
	}
	if !r.limits.allowLookup(asker, now) {
		return
	}
	r.stats.Lookups.Add(1)
	var (
		target key.Key
		ok     bool
	)
	if m.Addr.IsValid() {
		target, ok = a.member.net.byAddr[m.Addr]
	} else {
		target, ok = a.member.net.byName[m.Name]
	}
	if b := r.peers[target]; ok && b != nil && target != asker {
		// The member looked up hears first: the asker's initiation
		// follows its own introduction at once, and a member not yet
		// told of the asker would drop it (and its copy, under load).
		r.intros.introduce(target, b, asker, a, out)
		return
	}
	r.stats.LookupMisses.Add(1)
	out.add(a.destination, &wire.LookupMiss{Time: r.clock.stamp(now), Addr: m.Addr, Name: m.Name})
}

// members reports the members registered now and the networks they form.
func (r *registry) members() (members, networks int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, n := range r.networks {
		members += n.count
	}
	return members, len(r.networks)
}
