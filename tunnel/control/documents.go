package control

import (
	"crypto/sha256"
	"errors"
	"iter"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/tunnel/policy"
)

// A network's documents, as this member holds them: the newest policy,
// which the data path's filter enforces on what members send us, and
// every revocation, whose keys are no members any more. They come from
// the config (Policy =), from `punchtun network publish` (Publish), from
// the rendezvous (Document), and from other members inside the tunnel
// (gossip, tunnel/policy); each is verified here against the network key,
// whoever brought it. What is new is kept in the state directory, applied
// at once, and handed on: to the rendezvous, and to every member in
// WireGuard, as a summary that lets each side send what the other lacks.

// CertWarnBefore is how long before our certificate expires we warn: in
// the log once a day (certWarnEvery), and in status.
const (
	CertWarnBefore = 14 * 24 * time.Hour
	certWarnEvery  = 24 * time.Hour
)

// documents is the control plane's side of the network's documents. It
// asks the rest of the control plane only what its fields below say: the
// members, the rendezvous (rendezvousClient), the data path's Inject
// (gossip), and where to keep what it holds.
type documents struct {
	log     *slog.Logger
	members docMembers
	rv      rendezvousClient
	inject  injector       // the data path's; set at Start (Control.attach)
	dropped *atomic.Uint64 // Control.Dropped: gossip from no member
	kept    *kept          // where path is written

	gossip gossipState    // the documents' gossip with members
	held   *cert.Holdings // nil: no network
	filter *policy.Filter
	path   string // where they are kept, beside the state file: IFACE.documents, a document's text a line ("" for nowhere)
	// loggedOlder is the seq of the last older policy logged as ignored.
	loggedOlder  uint64
	loggedRevoke bool // that our own key is revoked
	certWarned   time.Time
	// verified are the hashes of documents from the rendezvous that
	// verified (fromServer).
	verified map[[32]byte]struct{}
	// dirty: what is held changed since it was last kept, at savedAt.
	dirty   bool
	savedAt time.Time
	// nextPrune is when the revocations that name nothing live any more
	// are next forgotten.
	nextPrune time.Time
	// Refused counts documents refused: not our network's, or not signed
	// by its key.
	Refused atomic.Uint64
}

// docMembers is what the documents ask of the network's members.
type docMembers interface {
	// ownCert is this member's certificate; nil for none.
	ownCert() *cert.Cert
	// all are the peers that are members; holder the one that holds
	// addr (nil: none).
	all() iter.Seq[*peer]
	holder(addr netip.Addr) *peer
	// evict lets a member go, saying why.
	evict(p *peer, why string)
}

// injector hands the data path a packet as if the TUN had read it
// (link.DataPath's Inject).
type injector interface{ Inject(pkt []byte) }

// configure takes a config's network and the documents it names; those
// kept from before are loaded again for a new network.
func (d *documents) configure(cfg Config, now time.Time) {
	if d.held == nil || d.held.Network() != cfg.Network {
		d.held, d.verified = nil, map[[32]byte]struct{}{}
		if !cfg.Network.IsZero() {
			d.held = cert.NewHoldings(cfg.Network)
			d.load()
			d.save() // whether it can be kept shows now, not at the first document
		}
	}
	for _, doc := range cfg.Documents {
		d.add(doc, "the config", now)
	}
	d.apply(now)
}

// load reads the documents kept, verifying each again.
func (d *documents) load() {
	if d.path == "" {
		return
	}
	b, err := os.ReadFile(d.path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("cannot read the network's documents kept", "path", d.path, "err", err)
		}
		return
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		doc, err := cert.ParseDocumentText(line)
		if err == nil {
			_, err = d.held.Add(doc)
		}
		if err != nil && !errors.Is(err, cert.ErrOlderPolicy) {
			d.log.Warn("a network document kept is refused", "path", d.path, "err", err)
		}
	}
}

// docsSaveEvery spaces the writes of what is held: each rewrites and
// syncs the whole file, so a member catching up on thousands of documents
// writes it once a second (the tick), not once a document. The first
// change after a quiet second is kept at once; shutdown keeps what is
// left.
const docsSaveEvery = time.Second

// changed notes that what is held changed, and keeps it if the last write
// is docsSaveEvery old.
func (d *documents) changed(now time.Time) {
	d.dirty = true
	d.saveDue(now)
}

// saveDue keeps what is held if it changed and the last write is
// docsSaveEvery old (the tick calls it).
func (d *documents) saveDue(now time.Time) {
	if d.dirty && d.held != nil && (d.savedAt.IsZero() || now.Sub(d.savedAt) >= docsSaveEvery) {
		d.savedAt = now
		d.save()
	}
}

// flush keeps what is held now if it changed (shutdown).
func (d *documents) flush() {
	if d.dirty && d.held != nil {
		d.save()
	}
}

// save keeps what is held, atomically (kept.write).
func (d *documents) save() {
	d.dirty = false
	var b strings.Builder
	if p := d.held.Policy(); p != nil {
		b.WriteString(p.Text() + "\n")
	}
	for _, r := range d.held.Revocations() {
		b.WriteString(r.Text() + "\n")
	}
	d.kept.write(d.path, []byte(b.String()))
}

// publish takes a document handed to this interface and says why not.
func (d *documents) publish(raw []byte, now time.Time) error {
	doc, err := cert.ParseDocument(raw)
	if err != nil {
		return err
	}
	if d.held == nil {
		return errors.New("this interface is in no network")
	}
	_, err = d.add(doc, "publish", now)
	if errors.Is(err, cert.ErrOlderPolicy) {
		return errors.New("policy: seq " + strconv.FormatUint(doc.Seq, 10) + " is older than the policy held, seq " + strconv.FormatUint(d.held.Policy().Seq, 10) + ": nothing changed")
	}
	return err
}

// add takes a verified document from where: new ones are kept, applied
// and handed on.
func (d *documents) add(doc *cert.Document, where string, now time.Time) (bool, error) {
	return d.addFrom(doc, where, nil, now)
}

// addFrom is add of a document from rendezvous src (nil: from elsewhere),
// which is not handed it back.
func (d *documents) addFrom(doc *cert.Document, where string, src *server, now time.Time) (bool, error) {
	if d.held == nil {
		d.Refused.Add(1)
		return false, errors.New("this interface is in no network")
	}
	added, err := d.held.Add(doc)
	switch {
	case errors.Is(err, cert.ErrOlderPolicy):
		if d.loggedOlder != doc.Seq {
			d.loggedOlder = doc.Seq
			d.log.Info("an older policy is ignored", "seq", doc.Seq, "held", d.held.Policy().Seq, "from", where)
		}
		return false, err
	case err != nil:
		d.Refused.Add(1)
		d.log.Warn("a network document is refused", "from", where, "err", err)
		return false, err
	case !added:
		return false, nil
	}
	d.log.Info("network document taken", "kind", doc.KindName(), "seq", doc.Seq, "from", where,
		"rules", len(doc.Rules), "revoked", len(doc.Revoked), "retired", len(doc.Retired))
	d.changed(now)
	d.apply(now)
	d.publishNew(doc, src, now) // paced
	for p := range d.members.all() {
		d.sendSummary(p, false)
	}
	return true, nil
}

// apply lets members go whose key is revoked or whose certificate is
// retired (introductions of them are refused after: members.verify), and
// gives the filter the policy and the members as they are now.
func (d *documents) apply(now time.Time) {
	if d.held != nil {
		for p := range d.members.all() {
			if err := d.held.Refuses(p.member); err != nil {
				d.members.evict(p, err.Error())
			}
		}
		if own := d.members.ownCert(); own != nil && !d.loggedRevoke {
			if err := d.held.Refuses(own); err != nil {
				d.loggedRevoke = true
				d.log.Error("the network key revoked this member's key or retired its certificate: no member will take it", "err", err)
			}
		}
	}
	d.refilter()
}

// refilter hands the filter the policy, this member and the members in
// WireGuard. members.setCert calls it before a member enters WireGuard.
func (d *documents) refilter() {
	var pol *cert.Document
	if d.held != nil {
		pol = d.held.Policy()
	}
	var self *policy.Member
	if own := d.members.ownCert(); own != nil {
		self = policy.MemberOf(own)
	}
	byAddr := map[netip.Addr]*policy.Member{}
	for p := range d.members.all() {
		m := policy.MemberOf(p.member)
		for _, a := range m.Addrs {
			byAddr[a] = m
		}
	}
	d.filter.Set(pol, self, byAddr)
}

// refuses says why the documents held refuse mc: its key revoked, or
// the certificate retired; nil if they take it (or none are held).
func (d *documents) refuses(mc *cert.Cert) error {
	if d.held == nil {
		return nil
	}
	return d.held.Refuses(mc)
}

// summary is what registrations carry: nil without a network.
func (d *documents) summary() *cert.Summary {
	if d.held == nil {
		return nil
	}
	s := d.held.Summary()
	return &s
}

// fromServer takes a document a rendezvous sent, whatever its message's
// time: one verified before is not verified again, so that replaying
// the rendezvous's packets costs a hash, not a signature check.
func (d *documents) fromServer(s *server, m *wire.Document, now time.Time) {
	h := sha256.Sum256(m.Doc)
	if _, ok := d.verified[h]; ok {
		return
	}
	doc, err := cert.ParseDocument(m.Doc)
	if err != nil {
		d.Refused.Add(1)
		d.log.Warn("a rendezvous sent a network document that is refused", "rendezvous", s.hostport, "err", err)
		return
	}
	if len(d.verified) >= maxVerified {
		clear(d.verified)
	}
	d.verified[h] = struct{}{}
	d.addFrom(doc, "rendezvous "+s.hostport, s, now)
}

// maxVerified bounds the documents from the rendezvous remembered as
// verified.
const maxVerified = 4096

// tick forgets the revocations that name nothing live any more, runs the
// filter's clock, publishes and gossips what is due, and warns of our
// certificate's expiry.
func (d *documents) tick(now time.Time) {
	if !now.Before(d.nextPrune) {
		d.nextPrune = now.Add(pruneEvery)
		if d.held != nil && d.held.Prune(now) {
			d.changed(now)
			d.apply(now)
		}
	}
	d.filter.Tick(now)
	d.saveDue(now)
	for s := range d.rv.registeredServers() {
		d.drainPublish(s, now)
	}
	d.tickGossip(now)
	own := d.members.ownCert()
	if own == nil || own.NotAfter.Sub(now) > CertWarnBefore || now.Sub(d.certWarned) < certWarnEvery {
		return
	}
	d.certWarned = now
	d.log.Warn("this member's certificate expires soon: sign a new one and apply it with punchtun syncconf",
		"valid_until", own.NotAfter.UTC().Format(time.RFC3339), "left", own.NotAfter.Sub(now).Round(time.Minute).String())
}
