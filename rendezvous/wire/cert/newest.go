package cert

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Newest remembers, for one network, the newest certificate seen of each
// member key (the one with the latest not-before), and which certificate
// claimed each address and name last. The owner re-signs a member to
// change what it is (groups taken away), or signs another member with an
// address or name (moved to a new machine); the old certificate stays
// valid until it expires, so a holder that has seen the new one refuses
// the old (Superseded) rather than let it restore what the owner took
// away — also while the new holder is away. A key's entry lives until
// every certificate seen of it has expired, a claim until the certificate
// that made it expires. What has never been seen here cannot be refused
// here: the owner retires a certificate for certain with a revocation
// (SignRevocations). Not safe for concurrent use.
type Newest struct {
	network NetworkKey
	seen    map[key.Key]*newestEntry
	claims  map[string]*claim // "a:" address or "n:" name → the newest certificate to claim it
}

// claim is a certificate's claim to an address or a name.
type claim struct {
	member    key.Key
	notBefore time.Time
	until     time.Time
}

type newestEntry struct {
	cert  *Cert
	until time.Time // the latest not-after of the certificates seen of the key
}

// NewNewest returns an empty Newest of network.
func NewNewest(network NetworkKey) *Newest {
	return &Newest{network: network, seen: map[key.Key]*newestEntry{}, claims: map[string]*claim{}}
}

// See takes a verified certificate of the network: nil when it is the
// newest of its key seen (it is remembered) or as new as that one; an
// *Error of reason Superseded when a certificate of its key with a later
// not-before has been seen. Only a certificate valid now counts (Check
// says why not): one signed ahead, for a renewal, supersedes nothing
// until its start.
func (n *Newest) See(c *Cert, now time.Time) error {
	if err := c.Check(n.network, now); err != nil {
		return err
	}
	e := n.seen[c.Member]
	if e != nil && c.NotBefore.Before(e.cert.NotBefore) {
		return &Error{Reason: Superseded, Detail: "a newer certificate of " + c.Member.String() +
			", valid from " + e.cert.NotBefore.UTC().Format(time.RFC3339) + ", replaces it"}
	}
	for _, id := range claimsOf(c) {
		if cl := n.claims[id]; cl != nil && cl.member != c.Member && cl.notBefore.After(c.NotBefore) && now.Before(cl.until) {
			return &Error{Reason: Superseded, Detail: "the " + id[2:] + " it claims was given to " + cl.member.String() +
				" by a newer certificate, valid from " + cl.notBefore.UTC().Format(time.RFC3339)}
		}
	}
	switch {
	case e == nil:
		n.seen[c.Member] = &newestEntry{cert: c, until: c.NotAfter}
	case c.NotBefore.After(e.cert.NotBefore):
		e.cert = c
	}
	if e != nil && c.NotAfter.After(e.until) {
		e.until = c.NotAfter
	}
	n.claim(c, now)
	return nil
}

// claimsOf names what c claims: its addresses and its name.
func claimsOf(c *Cert) []string {
	ids := make([]string, 0, len(c.Addresses)+1)
	for _, p := range c.Addresses {
		ids = append(ids, "a:"+p.Addr().String())
	}
	return append(ids, "n:"+c.Name)
}

// claim records c's claims where no newer certificate's stand.
func (n *Newest) claim(c *Cert, now time.Time) {
	for _, id := range claimsOf(c) {
		if cl := n.claims[id]; cl == nil || !now.Before(cl.until) || !cl.notBefore.After(c.NotBefore) {
			n.claims[id] = &claim{member: c.Member, notBefore: c.NotBefore, until: c.NotAfter}
		}
	}
}

// Of returns the newest certificate seen of k, nil if none.
func (n *Newest) Of(k key.Key) *Cert {
	if e := n.seen[k]; e != nil {
		return e.cert
	}
	return nil
}

// Prune forgets keys whose every certificate seen has expired by now,
// reporting whether it forgot any.
func (n *Newest) Prune(now time.Time) bool {
	pruned := false
	for k, e := range n.seen {
		if !now.Before(e.until) {
			delete(n.seen, k)
			pruned = true
		}
	}
	for id, cl := range n.claims {
		if !now.Before(cl.until) {
			delete(n.claims, id)
		}
	}
	return pruned
}

// Len counts the keys remembered.
func (n *Newest) Len() int { return len(n.seen) }

// AppendText writes what is remembered to keep it: a line per key, the
// newest certificate's text and the Unix second the entry lives until.
func (n *Newest) AppendText(b []byte) []byte {
	for _, e := range n.seen {
		b = fmt.Appendf(b, "%s %d\n", e.cert.Text(), e.until.Unix())
	}
	return b
}

// LoadText takes lines AppendText wrote, verifying each certificate
// again; entries of another network, or expired by now, are dropped. It
// returns the first error met, having taken every good line.
func (n *Newest) LoadText(s string, now time.Time) error {
	var first error
	for line := range strings.SplitSeq(s, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if err := n.loadLine(line, now); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (n *Newest) loadLine(line string, now time.Time) error {
	text, until, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		return errors.New("newest certificates: a line is not a certificate and a time")
	}
	c, err := ParseText(text)
	if err != nil {
		return err
	}
	u, err := strconv.ParseInt(until, 10, 64)
	if err != nil {
		return fmt.Errorf("newest certificates: %v", err)
	}
	if c.Network != n.network {
		return &Error{Reason: OtherNetwork, Detail: "signed by network " + c.Network.String()}
	}
	t := time.Unix(u, 0)
	if !now.Before(t) {
		return nil // every certificate seen of the key has expired
	}
	// It was seen valid when it was kept; its own expiry may have passed
	// while an older one of its key is still valid, so See's check is not
	// asked again.
	if e := n.seen[c.Member]; e == nil || c.NotBefore.After(e.cert.NotBefore) {
		n.seen[c.Member] = &newestEntry{cert: c, until: t}
	}
	if now.Before(c.NotAfter) {
		n.claim(c, now)
	}
	return nil
}
