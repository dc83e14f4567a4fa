package control

import (
	"iter"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// A network's members, on demand. The first packet to an address of the
// network that no peer holds is held by the data path, which tells us
// (link.Events.UnknownDestination); we look the address up at the
// rendezvous, which introduces both members to each other with their certificates. Each
// side checks the other's certificate itself — signed by our network's
// key, valid now, for the key that will handshake, addresses clear of the
// static peers' and ours, and of other members' unless its certificate is
// the newer (an address or name moved goes to the newer) — and only then
// adds the member to
// WireGuard (AllowedIPs exactly its certificate's addresses) and to the
// data path, which sends what it held. From there a member is a peer like
// any other: punching, relays, TCP and TURN. A member idle for
// MemberIdle leaves WireGuard again, and comes back on the next packet;
// one whose certificate expires leaves at that moment.

const (
	// MemberIdle is how long a member may carry no data before it is let
	// go: memory follows the members in use, not the network's size.
	MemberIdle = 5 * time.Minute
	// lookupRetry spaces the lookups of one address while no answer
	// comes; lookupTries bounds them.
	lookupRetry = time.Second
	lookupTries = 4
	// missHold is how long an address nobody holds is not asked again.
	missHold = 2 * time.Second
	// memberSweep spaces the checks for idle and expired members.
	memberSweep = 5 * time.Second
	// maxNameLookups bounds the names looked up at once for DNS.
	maxNameLookups = 64
	// pruneEvery spaces the checks for expired certificates, which the
	// newest seen and the revocations held then forget.
	pruneEvery = time.Minute
)

// members is the control plane's side of a network. It asks the rest of
// the control plane only what its fields below say: the peers (read here,
// added and dropped through roster), the rendezvous (lookups, registering
// anew), the documents' verdict on a certificate and the filter, and the
// member lists of WireGuard and the data path.
type members struct {
	log    *slog.Logger
	self   key.Key           // our key: never a member's
	peers  map[key.Key]*peer // the control plane's; read here, changed through roster
	roster roster
	rv     rendezvousClient
	docs   memberDocs
	wg     memberWireGuard // set at Start (Control.attach)
	dsts   destinations    // the data path's; set at Start
	kept   *kept           // where newestPath is written

	network cert.NetworkKey // zero: no network
	own     *cert.Cert
	// ownAddrs are the tunnel's addresses, static the static peers'
	// AllowedIPs: no member may take either.
	ownAddrs, static []netip.Prefix
	lookups          map[netip.Addr]*lookup
	// names are the lookups by name that DNS questions wait for.
	names map[string]*nameLookup
	// refused is why the rendezvous last refused our certificate (0: it
	// took it); loggedRefusal the last reason logged.
	refused, loggedRefusal cert.Reason
	logged                 map[key.Key]cert.Reason // refusals logged, per member
	nextSweep              time.Time
	// newest is the newest certificate seen of each member key (nil: no
	// network): an older one is refused, so that a member re-signed with
	// less cannot get back what it lost with the certificate it had.
	// Kept in newestPath (IFACE.certs, beside the state file) by
	// saveNewest, at most once per newestSaveEvery, and at shutdown.
	newest              *cert.Newest
	newestPath          string
	newestDirty         bool
	newestSaved         time.Time
	nextPrune           time.Time // when expired certificates are next forgotten
	loggedOwnSuperseded bool
	// Refusals counts the members refused here, by cert.Reason.
	Refusals [cert.NumReasons]atomic.Uint64
}

// roster adds a peer to the control plane, and drops one from it, the
// data path and TURN's list (Control.newPeer, Control.dropPeer).
type roster interface {
	newPeer(PeerConfig) *peer
	dropPeer(*peer)
}

// memberDocs is what members asks of the network's documents.
type memberDocs interface {
	// refuses says why the documents held refuse mc (a revoked key, a
	// retired certificate); nil if they take it.
	refuses(mc *cert.Cert) error
	// refilter hands the filter the members as they are now.
	refilter()
}

// lookup is a lookup of one address under way.
type lookup struct {
	sent   time.Time
	tries  int
	missed time.Time // nobody holds it: not asked again until missHold after
}

// configure takes a config's network; members of another network leave.
func (m *members) configure(cfg Config, now time.Time) {
	// A reload that renews, adds or drops our certificate registers at
	// once (not at the first configure, from New: registering is due then).
	changed := m.lookups != nil && (m.network != cfg.Network || !slices.Equal(certBytes(m.own), certBytes(cfg.Cert)))
	if m.network != cfg.Network {
		for _, p := range m.peers {
			if p.member != nil {
				m.evict(p, "the config's network changed")
			}
		}
	}
	if m.newest == nil || m.network != cfg.Network {
		m.newest = nil
		if cfg.Network.IsZero() {
			m.kept.forget()
		} else {
			m.newest = cert.NewNewest(cfg.Network)
			m.loadNewest(now)
			m.newestDirty = true // whether it can be kept shows now, not at the first member
		}
	}
	m.network, m.own, m.ownAddrs, m.static = cfg.Network, cfg.Cert, cfg.Addresses, cfg.Static
	if m.lookups == nil {
		m.lookups, m.logged, m.names = map[netip.Addr]*lookup{}, map[key.Key]cert.Reason{}, map[string]*nameLookup{}
	}
	if m.own != nil && m.newest != nil {
		if err := m.see(m.own, now); cert.ReasonOf(err) == cert.Superseded && !m.loggedOwnSuperseded {
			m.loggedOwnSuperseded = true
			m.log.Warn("this member's certificate is older than one seen of its key: members that saw the newer refuse it; apply the newest with punchtun syncconf",
				"err", err)
		}
	}
	m.saveNewest(now)
	if changed {
		if cfg.Cert != nil {
			m.log.Info("certificate changed: registering with it", "valid_until", cfg.Cert.NotAfter)
		}
		m.rv.reregister(now)
	}
}

// ownCert is this member's certificate; nil for none.
func (m *members) ownCert() *cert.Cert { return m.own }

// all are the peers that are members.
func (m *members) all() iter.Seq[*peer] {
	return func(yield func(*peer) bool) {
		for _, p := range m.peers {
			if p.member != nil && !yield(p) {
				return
			}
		}
	}
}

// certBytes is the certificate our registrations carry; nil without one.
func (m *members) certBytes() []byte { return certBytes(m.own) }

func certBytes(c *cert.Cert) []byte {
	if c == nil {
		return nil
	}
	return c.Bytes()
}

// unknownDestination looks dst up: the data path holds a packet to it.
func (m *members) unknownDestination(dst netip.Addr, now time.Time) {
	if m.network.IsZero() {
		return
	}
	l := m.lookups[dst]
	if l != nil && (now.Sub(l.sent) < lookupRetry || now.Sub(l.missed) < missHold) {
		return
	}
	if m.holder(dst) != nil {
		return // held before the data path heard of it
	}
	if l == nil || now.Sub(l.sent) >= lookupRetry*lookupTries {
		l = &lookup{}
		m.lookups[dst] = l
	}
	m.sendLookup(dst, l, now)
}

func (m *members) sendLookup(dst netip.Addr, l *lookup, now time.Time) {
	l.sent, l.tries = now, l.tries+1
	for s := range m.rv.registeredServers() {
		m.rv.sendServer(s, &wire.Lookup{Time: m.rv.stamp(), Addr: dst})
	}
}

// tick retries lookups that had no answer, and lets go of members
// idle too long or whose certificates expired.
func (m *members) tick(now time.Time) {
	for dst, l := range m.lookups {
		switch {
		case !l.missed.IsZero():
			if now.Sub(l.missed) >= missHold {
				delete(m.lookups, dst)
			}
		case l.tries >= lookupTries:
			delete(m.lookups, dst)
		case now.Sub(l.sent) >= lookupRetry:
			m.sendLookup(dst, l, now)
		}
	}
	for name, nl := range m.names {
		if now.Sub(nl.since) >= lookupRetry*lookupTries {
			m.answerName(name, nil) // no answer came
		}
	}
	// Expiry is checked every tick: a member leaves at the second its
	// certificate ends, not at the next sweep.
	sweep := !now.Before(m.nextSweep)
	if sweep {
		m.nextSweep = now.Add(memberSweep)
	}
	if !now.Before(m.nextPrune) {
		m.nextPrune = now.Add(pruneEvery)
		m.prune(now)
	}
	m.saveNewest(now)
	for _, p := range m.peers {
		switch {
		case p.member == nil:
		case !now.Before(p.member.NotAfter):
			m.evict(p, "its certificate expired at "+p.member.NotAfter.UTC().Format(time.RFC3339))
		case sweep && now.Sub(latest(p.ep.Activity().Data, p.memberSince)) > MemberIdle:
			m.evict(p, "idle")
		}
	}
}

// lookupName answers from the members known, or asks the rendezvous and
// returns the channel the answer will come on.
func (m *members) lookupName(name string, now time.Time) ([]netip.Addr, chan []netip.Addr) {
	if m.network.IsZero() {
		return nil, nil
	}
	if m.own != nil && m.own.Name == name {
		return memberAddrs(m.own), nil
	}
	for _, p := range m.peers {
		if p.member != nil && p.member.Name == name {
			return memberAddrs(p.member), nil
		}
	}
	nl := m.names[name]
	if nl == nil {
		if len(m.names) >= maxNameLookups {
			return nil, nil
		}
		nl = &nameLookup{since: now}
		m.names[name] = nl
		for s := range m.rv.registeredServers() {
			m.rv.sendServer(s, &wire.Lookup{Time: m.rv.stamp(), Name: name})
		}
	}
	wait := make(chan []netip.Addr, 1)
	nl.waits = append(nl.waits, wait)
	return nil, wait
}

// nameLookup is a lookup by name under way, and the questions waiting.
type nameLookup struct {
	since time.Time
	waits []chan []netip.Addr
}

// answerName hands addrs to the DNS questions waiting for name.
func (m *members) answerName(name string, addrs []netip.Addr) {
	if nl := m.names[name]; nl != nil {
		for _, w := range nl.waits {
			w <- addrs // buffered, one answer each
		}
	}
	delete(m.names, name)
}

// lookupMissed: no member holds what we asked.
func (m *members) lookupMissed(miss *wire.LookupMiss, now time.Time) {
	if miss.Name != "" {
		m.answerName(miss.Name, nil)
		return
	}
	if l := m.lookups[miss.Addr]; l != nil {
		l.missed = now
		m.log.Debug("no member holds the address", "address", miss.Addr)
	}
}

// refusedUs: the rendezvous does not take our certificate.
func (m *members) refusedUs(s *server, r *wire.Refused) {
	reason := cert.Reason(r.Reason)
	if m.loggedRefusal != reason {
		m.loggedRefusal = reason
		m.log.Warn("the rendezvous refuses this member's certificate: no other member can reach us through it",
			"rendezvous", s.hostport, "reason", reason.String())
	}
	m.refused = reason
}

// intro takes an introduction that carries a certificate, for a
// member not yet known or one whose certificate changed; it returns the
// peer to hand the introduction on to, or nil when refused.
func (m *members) intro(b *wire.Intro, now time.Time) *peer {
	p := m.peers[b.Peer]
	if p != nil && (p.member == nil || slices.Equal(p.member.Bytes(), b.Cert)) {
		return p // a static peer, or a member as we know it
	}
	mc, displaced, err := m.verify(b.Peer, b.Cert, now)
	if err != nil {
		m.refuse(b.Peer, err)
		if p != nil && cert.ReasonOf(err) == cert.Superseded && m.isNewest(p.member) {
			return p // it presents an older certificate than the one it holds here, which stays
		}
		if p != nil {
			m.evict(p, "its new certificate is refused")
		}
		return nil
	}
	for _, old := range displaced {
		m.evict(old, "member "+mc.Name+" ("+b.Peer.String()+") holds its address or name by a newer certificate")
	}
	if p != nil {
		m.setCert(p, mc)
		return p
	}
	p = m.roster.newPeer(PeerConfig{Name: mc.Name, Key: mc.Member})
	p.memberSince = now
	m.setCert(p, mc)
	m.log.Info("member added", "peer", p.label(), "addresses", mc.Addresses, "valid_until", mc.NotAfter)
	return p
}

// verify checks a certificate an introduction carries, as this
// member sees it: the rendezvous is not trusted with any of it. An
// address or name another member holds goes to the newer certificate (the
// later not before): the owner moved it, and the old holder's certificate,
// still valid, must not keep it. displaced are the members that lose it.
func (m *members) verify(peerKey key.Key, raw []byte, now time.Time) (mc *cert.Cert, displaced []*peer, err error) {
	if m.network.IsZero() {
		return nil, nil, &cert.Error{Reason: cert.OtherNetwork, Detail: "this interface is in no network"}
	}
	if mc, err = cert.Parse(raw); err != nil {
		return nil, nil, err
	}
	if err := mc.Check(m.network, now); err != nil {
		return nil, nil, err
	}
	if mc.Member != peerKey || peerKey == m.self {
		return nil, nil, &cert.Error{Reason: cert.KeyMismatch, Detail: "for key " + mc.Member.String() + ", introduced as " + peerKey.String()}
	}
	if err := m.docs.refuses(mc); err != nil {
		return nil, nil, err // its key revoked, or this certificate retired
	}
	if err := m.see(mc, now); err != nil {
		return nil, nil, err // a newer certificate of its key was seen
	}
	for _, a := range mc.Addresses {
		addr := a.Addr()
		for _, s := range m.static {
			if s.Contains(addr) {
				return nil, nil, &cert.Error{Reason: cert.Overlap, Detail: addr.String() + " is a static peer's (AllowedIPs " + s.String() + ")"}
			}
		}
		for _, own := range m.ownAddrs {
			if own.Addr() == addr {
				return nil, nil, &cert.Error{Reason: cert.Overlap, Detail: addr.String() + " is this interface's"}
			}
		}
	}
	for k, p := range m.peers {
		if k == peerKey || p.member == nil {
			continue
		}
		what := clash(p.member, mc)
		if what == "" {
			continue
		}
		if !mc.NotBefore.After(p.member.NotBefore) {
			return nil, nil, &cert.Error{Reason: cert.Overlap, Detail: what + " is member " + p.label() + "'s, by a certificate as new or newer"}
		}
		displaced = append(displaced, p)
	}
	return mc, displaced, nil
}

// clash names an address or the name both certificates claim; "" for
// none.
func clash(a, b *cert.Cert) string {
	if a.Name == b.Name {
		return "name " + a.Name
	}
	for _, p := range b.Addresses {
		if a.Holds(p.Addr()) {
			return p.Addr().String()
		}
	}
	return ""
}

// refuse counts a refused member and logs it once per reason.
func (m *members) refuse(k key.Key, err error) {
	r := cert.ReasonOf(err)
	m.Refusals[r].Add(1)
	if m.logged[k] == r {
		return
	}
	if len(m.logged) >= 4096 {
		clear(m.logged)
	}
	m.logged[k] = r
	m.log.Warn("member refused", "peer", k, "reason", r.String(), "err", err)
}

// setCert puts a verified member into WireGuard and the data path
// with its certificate's addresses, replacing what it held before.
func (m *members) setCert(p *peer, mc *cert.Cert) {
	var old []netip.Addr
	if p.member != nil {
		old = memberAddrs(p.member)
	}
	p.member, p.name = mc, mc.Name
	m.docs.refilter() // before WireGuard takes its packets
	allowed := make([]netip.Prefix, len(mc.Addresses))
	for i, a := range mc.Addresses {
		allowed[i] = netip.PrefixFrom(a.Addr(), a.Addr().BitLen())
	}
	if err := m.wg.AddMember(p.key, allowed); err != nil {
		m.log.Warn("cannot add the member to WireGuard", "peer", p.label(), "err", err)
	}
	m.dsts.RemoveDestinations(old)
	m.dsts.AddDestinations(memberAddrs(mc)) // what was held for it leaves now
	for _, a := range mc.Addresses {
		delete(m.lookups, a.Addr())
	}
	m.answerName(mc.Name, memberAddrs(mc))
}

// holder is the member that holds addr; nil for none.
func (m *members) holder(addr netip.Addr) *peer {
	for _, p := range m.peers {
		if p.member != nil && p.member.Holds(addr) {
			return p
		}
	}
	return nil
}

// evict lets a member go: from WireGuard, the data path and here.
func (m *members) evict(p *peer, why string) {
	m.log.Info("member let go", "peer", p.label(), "why", why)
	m.dsts.RemoveDestinations(memberAddrs(p.member))
	if err := m.wg.RemoveMember(p.key); err != nil {
		// evict's callers cannot undo a departure: say what failed, and
		// let it go from the control plane and the data path all the same.
		m.log.Warn("cannot remove the member from WireGuard", "peer", p.label(), "err", err)
	}
	m.roster.dropPeer(p)
	m.docs.refilter()
}

func memberAddrs(mc *cert.Cert) []netip.Addr {
	out := make([]netip.Addr, len(mc.Addresses))
	for i, a := range mc.Addresses {
		out[i] = a.Addr()
	}
	return out
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
