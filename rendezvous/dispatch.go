package rendezvous

import (
	"bytes"
	"net"
	"net/netip"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Dispatch: every packet, from a UDP socket or a TCP stream, goes to the
// part it is for — a relay frame to the relays, STUN answered here, a
// control message opened and handed to the registry — and what the
// registry answers is sealed and written here, outside its lock.

// packetHandler takes a packet from src that came in on e; other is the
// server's alternate address for STUN answers.
type packetHandler func(e egress, other netip.AddrPort, b []byte, src netip.AddrPort)

func (s *Server) handle(e egress, other netip.AddrPort, b []byte, src netip.AddrPort) {
	switch {
	case wire.IsRelay(b):
		s.relays.forward(e, b, src)
	case nat.IsSTUN(b):
		if !s.limits.allowSource(src, time.Now()) {
			return
		}
		resp, err := nat.BindingResponse(b, src, other)
		if err != nil {
			s.Stats.DropMalformed.Add(1)
			return
		}
		s.Stats.STUN.Add(1)
		e.WriteToUDPAddrPort(resp, src)
	case wire.IsControl(b):
		s.handleControl(e, b, src)
	default:
		s.Stats.DropMalformed.Add(1)
	}
}

func (s *Server) handleControl(e egress, b []byte, src netip.AddrPort) {
	h, err := wire.ParseHeader(b)
	if err != nil {
		s.Stats.DropMalformed.Add(1)
		return
	}
	if !s.limits.admit(b, src, time.Now()) {
		return
	}
	// Find the shared key and open the message outside the registry's
	// lock: a new key costs a Curve25519 multiplication (34 µs on the
	// 2-core lab machine), which must not stall everyone else's messages.
	if shared, ok := s.reg.sharedKey(h.Sender); ok {
		s.apply(e, h, b, src, shared)
		return
	}
	if shared, ok := s.limits.keys.cached(h.Sender); ok {
		s.apply(e, h, b, src, shared)
		return
	}
	if !s.limits.keys.reserve(time.Now()) {
		s.Stats.DropRateLimited.Add(1)
		return
	}
	if _, udp := e.(*net.UDPConn); !udp {
		// A TCP stream has a goroutine of its own: it can wait.
		s.applyNewKey(newKeyJob{e, h, b, src})
		return
	}
	// A UDP socket has one reader for all its peers: the multiplication
	// goes to a worker, one per core, and the reader goes on.
	select {
	case s.newKeyJobs <- newKeyJob{e, h, bytes.Clone(b), src}:
	default:
		s.Stats.DropRateLimited.Add(1) // the workers are that far behind
	}
}

// newKeyJob is a control message over UDP from a key without a shared key
// yet, waiting for a worker.
type newKeyJob struct {
	e   egress
	h   wire.Header
	b   []byte
	src netip.AddrPort
}

// newKeyQueue bounds the messages waiting for a worker: under 9 MiB
// (MaxControlLen each), and 20 ms of work on two cores.
const newKeyQueue = 1024

func (s *Server) newKeyWorker() {
	for {
		select {
		case <-s.done:
			return
		case j := <-s.newKeyJobs:
			s.applyNewKey(j)
		}
	}
}

func (s *Server) applyNewKey(j newKeyJob) {
	shared, err := s.limits.keys.compute(j.h.Sender)
	if err != nil {
		s.Stats.DropAuth.Add(1) // a low-order key: anyone could seal for it
		return
	}
	s.apply(j.e, j.h, j.b, j.src, shared)
}

// apply opens a control message with its sender's shared key, does the
// costly checks outside the registry's lock, and has the registry act on
// it.
func (s *Server) apply(e egress, h wire.Header, b []byte, src netip.AddrPort, shared wire.SharedKey) {
	plain, err := wire.Open(b, &shared)
	if err != nil {
		s.Stats.DropAuth.Add(1)
		return
	}
	body, err := wire.Parse(h.Type, plain)
	if err != nil {
		s.Stats.DropMalformed.Add(1)
		return
	}
	m := message{from: h.Sender, dest: destination{e, src, shared}, body: body}
	switch b := body.(type) {
	case *wire.Register:
		if b.Cert != nil {
			m.member, m.certErr = s.reg.checkCert(h.Sender, cert.NetworkKey(b.Network), b.Cert, time.Now())
		}
	case *wire.Publish:
		// An Ed25519 verify, unless it is a document held already
		// (members hand back what they take).
		if m.doc = s.docs.known(b.Doc); m.doc == nil {
			m.doc, m.certErr = cert.ParseDocument(b.Doc)
		}
	}
	s.send(s.reg.act(&m, time.Now()))
}

// message is an opened control message and what was checked of it
// outside the registry's lock: a registration's certificate (member, or
// certErr why not; both nil: none), or a published document (doc, or
// certErr why not).
type message struct {
	from    key.Key
	dest    destination // where it came from, and its sender's shared key
	body    wire.Body
	member  *cert.Cert
	doc     *cert.Document
	certErr error
}

// destination is where a message to a peer goes: the way out it came in
// by, its address, and the key it is sealed with.
type destination struct {
	egress   egress
	endpoint netip.AddrPort
	shared   wire.SharedKey
}

// reply is a message for a registered peer.
type reply struct {
	to   destination
	body wire.Body
}

// outgoing is what acting on one message sends: replies, sealed and
// written once the registry's lock is let go, then the documents a
// member's summary says it lacks, queued behind them in the outbox.
type outgoing struct {
	replies []reply
	lacking *lacking
}

// lacking is what a member's registration says it may lack.
type lacking struct {
	network cert.NetworkKey
	member  key.Key
	docs    []*cert.Document
}

func (o *outgoing) add(to destination, m wire.Body) {
	o.replies = append(o.replies, reply{to, m})
}

// send seals and writes what out holds, each message within its
// destination's budget: registrations need no round trip, so ones from
// spoofed sources could otherwise aim acks and introductions at a
// victim, many for one.
func (s *Server) send(out outgoing) {
	for _, r := range out.replies {
		if !s.limits.allowSource(r.to.endpoint, time.Now()) {
			continue
		}
		r.to.egress.WriteToUDPAddrPort(sealFor(s.pub, &r.to.shared, r.body), r.to.endpoint)
	}
	if l := out.lacking; l != nil {
		s.docs.sendOnce(l.network, l.member, l.docs, time.Now())
	}
}

// sealFor seals m from the server with shared.
func sealFor(pub key.Key, shared *wire.SharedKey, m wire.Body) []byte {
	return wire.Seal(nil, m.Type(), pub, shared, m.Append(nil))
}
