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
	// maxIntroduced bounds the members remembered as introduced to one
	// member, which hear of it again when it moves.
	maxIntroduced = 256
)

// network is one network's registered members. Callers hold s.mu.
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
	// introduced are the members this one was introduced to: when it
	// moves they are introduced again at once, as peers that list each
	// other are.
	introduced map[key.Key]struct{}
}

// checkCert parses and verifies a registration's certificate, outside the
// server's lock: a signature check costs about 50 µs. A certificate the
// registration already holds is not verified again, only its validity.
func (s *Server) checkCert(sender key.Key, network cert.NetworkKey, raw []byte, now time.Time) (*cert.Cert, error) {
	s.mu.RLock()
	var held *cert.Cert
	if reg := s.peers[sender]; reg != nil && reg.member != nil && bytes.Equal(reg.member.cert.Bytes(), raw) {
		held = reg.member.cert
	}
	s.mu.RUnlock()
	if held == nil {
		var err error
		if held, err = cert.Parse(raw); err != nil {
			return nil, err
		}
	}
	return s.checkParsed(sender, network, held, now)
}

// checkParsed checks a parsed certificate against the network the member
// named, the allow-list, the clock and the sender.
func (s *Server) checkParsed(sender key.Key, network cert.NetworkKey, c *cert.Cert, now time.Time) (*cert.Cert, error) {
	if c.Network != network {
		return nil, &cert.Error{Reason: cert.OtherNetwork, Detail: "signed by network " + c.Network.String() + ", registered for " + network.String()}
	}
	if s.allowNetworks != nil && !s.allowNetworks[c.Network] {
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
// network key signed and the certificates seen (docStore.refuses); nil
// when it may. Callers hold s.mu.
func (s *Server) admitCert(c *cert.Cert, now time.Time) error {
	members := 0
	if n := s.networks[c.Network]; n != nil {
		members = n.count
	}
	newer, err := s.docs.refuses(c, members, now)
	if newer {
		s.dirty.Store(true)
	}
	return err
}

// join makes reg a member with c, or says why not. A member registered
// with an older certificate (an earlier NotBefore) that holds one of c's
// addresses or its name gives way: the owner moved them to c. Callers
// hold s.mu.
func (s *Server) join(sender key.Key, reg *registration, c *cert.Cert, now time.Time) error {
	if reg.member != nil && reg.member.cert.Network == c.Network {
		s.unindex(reg.member, sender)
	} else {
		s.leave(sender, reg)
	}
	n := s.networks[c.Network]
	if n == nil {
		n = &network{key: c.Network, byAddr: map[netip.Addr]key.Key{}, byName: map[string]key.Key{}}
	}
	if reg.member == nil && n.count >= s.maxMembers {
		return &cert.Error{Reason: cert.NetworkFull, Detail: "the network has its most members here"}
	}
	older := map[key.Key]string{}
	overlap := func(k key.Key, held bool, what string) error {
		if !held || k == sender {
			return nil
		}
		if o := s.peers[k]; o != nil && o.member != nil && o.member.cert.NotBefore.Before(c.NotBefore) {
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
		o := s.peers[k]
		s.leave(k, o)
		s.refuse(k, o, &cert.Error{Reason: cert.Overlap, Detail: what + " moved to a newer certificate, of " + sender.String()}, now)
	}
	if reg.member == nil {
		reg.member = &membership{net: n, introduced: map[key.Key]struct{}{}}
		if n.count++; n.count == 1 {
			s.docs.adopt(c.Network) // its documents are no orphans
		}
		s.docs.members(c.Network, n.count, now)
		s.networks[c.Network] = n
	}
	if reg.member.cert != c {
		reg.member.cert, reg.member.fingerprint = c, c.FingerprintBytes()
	}
	n.byName[c.Name] = sender
	for _, p := range c.Addresses {
		n.byAddr[p.Addr()] = sender
	}
	return nil
}

// unindex takes a member's name and addresses out of its network's
// indexes. Callers hold s.mu.
func (s *Server) unindex(m *membership, k key.Key) {
	if m.net.byName[m.cert.Name] == k {
		delete(m.net.byName, m.cert.Name)
	}
	for _, p := range m.cert.Addresses {
		if m.net.byAddr[p.Addr()] == k {
			delete(m.net.byAddr, p.Addr())
		}
	}
}

// leave ends reg's membership, if any; a network without members is
// forgotten. Callers hold s.mu.
func (s *Server) leave(k key.Key, reg *registration) {
	m := reg.member
	if m == nil {
		return
	}
	s.unindex(m, k)
	reg.member = nil
	s.out.settle(m.net.key, k)
	now := time.Now()
	m.net.count--
	s.docs.members(m.net.key, m.net.count, now)
	if m.net.count == 0 {
		delete(s.networks, m.net.key)
		s.docs.orphan(m.net.key, now) // kept for orphanTTL
	}
}

// refuse tells a peer why its certificate is not taken, counts it, and
// logs it once per peer and reason. Callers hold s.mu.
func (s *Server) refuse(sender key.Key, reg *registration, err error, now time.Time) {
	r := cert.ReasonOf(err)
	if int(r) < len(s.Stats.Refused) {
		s.Stats.Refused[r].Add(1)
	}
	if s.refusedLogged[sender] != r {
		if len(s.refusedLogged) >= limiterEntries {
			clear(s.refusedLogged)
		}
		s.refusedLogged[sender] = r
		s.log.Warn("member refused", "peer", sender, "reason", r.String(), "err", err)
	}
	s.send(reg, &wire.Refused{Time: s.clock.Next(uint64(now.UnixNano())), Reason: byte(r)})
}

// sameNetwork reports whether a and b are members of one network.
func sameNetwork(a, b *registration) bool {
	return a.member != nil && b.member != nil && a.member.net == b.member.net
}

// lookup answers a member's Lookup: an introduction to the member that
// holds the address or name, a miss, or nothing for a non-member or one
// over its rate. Callers hold s.mu.
func (s *Server) lookup(asker key.Key, m *wire.Lookup, now time.Time) {
	a := s.peers[asker]
	if a == nil || a.member == nil {
		s.Stats.DropNotMutual.Add(1)
		return
	}
	if !s.lookups.allow(asker, now) {
		s.Stats.DropRateLimited.Add(1)
		return
	}
	s.Stats.Lookups.Add(1)
	var (
		target key.Key
		ok     bool
	)
	if m.Addr.IsValid() {
		target, ok = a.member.net.byAddr[m.Addr]
	} else {
		target, ok = a.member.net.byName[m.Name]
	}
	if b := s.peers[target]; ok && b != nil && target != asker {
		// The member looked up hears first: the asker's initiation
		// follows its own introduction at once, and a member not yet
		// told of the asker would drop it (and its copy, under load).
		s.introduce(target, b, asker, a)
		return
	}
	s.Stats.LookupMisses.Add(1)
	s.send(a, &wire.LookupMiss{Time: s.clock.Next(uint64(now.UnixNano())), Addr: m.Addr, Name: m.Name})
}

// introducedMembers remembers that a and b met, so that each hears of the
// other again when it moves. Callers hold s.mu.
func introducedMembers(ka key.Key, a *registration, kb key.Key, b *registration) {
	if !sameNetwork(a, b) {
		return
	}
	for _, pair := range [...]struct {
		m *membership
		k key.Key
	}{{a.member, kb}, {b.member, ka}} {
		if len(pair.m.introduced) >= maxIntroduced {
			clear(pair.m.introduced) // the oldest pairs hear of a move by asking
		}
		pair.m.introduced[pair.k] = struct{}{}
	}
}

// Members reports the members registered now and the networks they form.
func (s *Server) Members() (members, networks int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, n := range s.networks {
		members += n.count
	}
	return members, len(s.networks)
}
