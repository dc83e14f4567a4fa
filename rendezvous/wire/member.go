package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// Membership on the wire (the networks of package wire/cert).
//
// A member's Register ends with the network it says it is a member of and
// its certificate, and an Intro of a member with the introduced member's
// certificate:
//
//	Register: ... | network public key (32) | certificate
//	Intro:    ... | certificate
//	certificate = length (2) | 1..MaxCert bytes, cert's binary encoding
//
// Absent (the body ends before it) means no network: the messages of peers
// without one are byte for byte what they were. A length of 0 or over
// MaxCert is an error. The network is sent apart from the certificate so
// that a member with a certificate of another network than its config's
// is refused as such, not taken for a member of that other network. The rendezvous and the peers parse and
// verify the certificate themselves (cert.Parse); this package only
// bounds it.
//
// A member asks for another member by address or by name:
//
//	Lookup:     time (8) | query
//	LookupMiss: time (8) | query, echoed: no member of the network holds it
//	Refused:    time (8) | reason (1, a cert.Reason): the rendezvous does
//	            not take the sender's certificate, and says why
//
//	query = kind (1) | 16 bytes of address (kind 1, IPv4 mapped)
//	                 | length (1, 1..63) and a name (kind 2)
//
// A Lookup is answered with an Intro of the member to both sides, a miss,
// or nothing (rate limited, or the sender is no member).
//
// A network's documents (its policy and revocations, cert.Document) reach
// the rendezvous from any member and go out to all:
//
//	Register:    ... | certificate | summary (24, optional)
//	RegisterAck: ... | summary (24; only in answer to one that had it)
//	Publish:     time (8) | document: a member hands the rendezvous one
//	Document:    time (8) | document: the rendezvous hands a member one
//	document = length (2) | 1..cert.MaxDocument bytes
//	summary  = cert.Summary: the newest policy's seq, a digest of all
//
// Each side sends what the other's summary says it may lack: a member
// registers (every RefreshInterval) with its summary, the rendezvous
// sends Documents for a differing one and answers with its own, and the
// member Publishes what the rendezvous lacks. A new document goes to
// every registered member of its network at once.

const (
	TypeLookup     Type = 8  // member → rendezvous
	TypeLookupMiss Type = 9  // rendezvous → member
	TypeRefused    Type = 10 // rendezvous → member
	TypePublish    Type = 11 // member → rendezvous
	TypeDocument   Type = 12 // rendezvous → member
)

// MaxCert bounds a certificate on the wire; cert.MaxLen is below it.
const MaxCert = 1024

// maxLookupName is a DNS label's length, as a certificate's name.
const maxLookupName = 63

// Query kinds of a Lookup.
const (
	LookupAddr byte = 1
	LookupName byte = 2
)

// Lookup asks the rendezvous to introduce the sender to the member of its
// network that holds Addr, or is named Name: exactly one is set.
type Lookup struct {
	Time uint64
	Addr netip.Addr
	Name string
}

// LookupMiss says that no registered member holds what a Lookup asked.
type LookupMiss struct {
	Time uint64
	Addr netip.Addr
	Name string
}

// Refused says why the rendezvous does not take the sender's membership;
// Reason is a cert.Reason.
type Refused struct {
	Time   uint64
	Reason byte
}

// Publish hands the rendezvous a document of the sender's network.
type Publish struct {
	Time uint64
	Doc  []byte
}

// Document hands a member a document of its network.
type Document struct {
	Time uint64
	Doc  []byte
}

func (*Lookup) Type() Type     { return TypeLookup }
func (*LookupMiss) Type() Type { return TypeLookupMiss }
func (*Refused) Type() Type    { return TypeRefused }
func (*Publish) Type() Type    { return TypePublish }
func (*Document) Type() Type   { return TypeDocument }

func (m *Publish) Append(b []byte) []byte {
	return appendDocument(binary.BigEndian.AppendUint64(b, m.Time), m.Doc)
}

func (m *Document) Append(b []byte) []byte {
	return appendDocument(binary.BigEndian.AppendUint64(b, m.Time), m.Doc)
}

func appendDocument(b, doc []byte) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(doc))), doc...)
}

// document reads a document's length and bytes.
func (r *reader) document() []byte {
	n := int(r.uint16())
	if r.err == nil && (n == 0 || n > cert.MaxDocument) {
		r.err = fmt.Errorf("wire: document of %d bytes, want 1 to %d", n, cert.MaxDocument)
		return nil
	}
	d := make([]byte, n)
	r.read(d)
	return d
}

func appendSummary(b []byte, s *cert.Summary) []byte {
	if s == nil {
		return b
	}
	return cert.AppendSummary(b, *s)
}

// optionalSummary reads what appendSummary wrote, if the body goes on.
func (r *reader) optionalSummary() *cert.Summary {
	if r.err != nil || len(r.b) == 0 {
		return nil
	}
	var b [cert.SummaryLen]byte
	r.read(b[:])
	s, _ := cert.ParseSummary(b[:])
	return &s
}

func (m *Lookup) Append(b []byte) []byte {
	return appendQuery(binary.BigEndian.AppendUint64(b, m.Time), m.Addr, m.Name)
}

func (m *LookupMiss) Append(b []byte) []byte {
	return appendQuery(binary.BigEndian.AppendUint64(b, m.Time), m.Addr, m.Name)
}

func (m *Refused) Append(b []byte) []byte {
	return append(binary.BigEndian.AppendUint64(b, m.Time), m.Reason)
}

func appendQuery(b []byte, addr netip.Addr, name string) []byte {
	if addr.IsValid() {
		a := addr.As16()
		return append(append(b, LookupAddr), a[:]...)
	}
	name = name[:min(len(name), maxLookupName)]
	return append(append(append(b, LookupName), byte(len(name))), name...)
}

var errQuery = errors.New("wire: lookup needs an address or a name of 1 to 63 bytes")

func (r *reader) query() (netip.Addr, string) {
	switch kind := r.byte(); {
	case r.err != nil:
	case kind == LookupAddr:
		var a [16]byte
		r.read(a[:])
		addr := netip.AddrFrom16(a).Unmap()
		if r.err == nil && !addr.IsGlobalUnicast() {
			r.err = errQuery
		}
		return addr, ""
	case kind == LookupName:
		n := int(r.byte())
		name := make([]byte, n)
		r.read(name)
		if r.err == nil && (n == 0 || n > maxLookupName) {
			r.err = errQuery
		}
		return netip.Addr{}, string(name)
	default:
		r.err = fmt.Errorf("wire: lookup of kind %d", kind)
	}
	return netip.Addr{}, ""
}

func parseLookup(r *reader) *Lookup {
	m := &Lookup{Time: r.uint64()}
	m.Addr, m.Name = r.query()
	return m
}

func parseLookupMiss(r *reader) *LookupMiss {
	m := &LookupMiss{Time: r.uint64()}
	m.Addr, m.Name = r.query()
	return m
}

// appendCert appends an optional certificate: nothing when there is none.
func appendCert(b, c []byte) []byte {
	if len(c) == 0 {
		return b
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(c)))
	return append(b, c...)
}

// optionalCert reads what appendCert wrote, if the body goes on.
func (r *reader) optionalCert() []byte {
	if r.err != nil || len(r.b) == 0 {
		return nil
	}
	return r.certificate()
}

// certificate reads a certificate's length and bytes.
func (r *reader) certificate() []byte {
	n := int(r.uint16())
	if r.err == nil && (n == 0 || n > MaxCert) {
		r.err = fmt.Errorf("wire: certificate of %d bytes, want 1 to %d", n, MaxCert)
		return nil
	}
	c := make([]byte, n)
	r.read(c)
	return c
}
