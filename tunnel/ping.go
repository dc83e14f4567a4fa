package tunnel

// `punchtun ping PEER`: a probe over the tunnel's control path, the sealed
// wire.Ping the control plane punches and keeps paths with, sent on the
// peer's current route — to the peer's endpoint, or wrapped for the relay —
// and its wire.Pong, timed. It asks over the status socket: the client
// sends one request line, {"request":"ping",...}; a client that sends none
// (and closes its side, as QueryStatus does) gets the status.

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// PingReply is one probe's outcome. Path is the way the pong came: direct,
// lan, relay or relay-tcp; Endpoint the peer's address, or the relay's.
type PingReply struct {
	Peer      string  `json:"peer"` // its Name, or its public key
	PublicKey string  `json:"public_key"`
	Path      string  `json:"path,omitempty"`
	Endpoint  string  `json:"endpoint,omitempty"`
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// Error says why no pong came; UnknownPeer that this interface has no
	// such peer.
	Error       string `json:"error,omitempty"`
	UnknownPeer bool   `json:"unknown_peer,omitempty"`
}

// request is a line a client sends on the status socket.
type request struct {
	Request   string `json:"request"` // "ping" or "syncconf"
	Peer      string `json:"peer,omitempty"`
	TimeoutMS int    `json:"timeout_ms,omitempty"`
	// syncconf: the config to apply, as read by the client from File
	// (the name its errors carry); none: the file the interface came
	// up from, read again.
	File   string `json:"file,omitempty"`
	Config []byte `json:"config,omitempty"`
}

// maxRequest bounds a request line: a config with thousands of peers fits.
const maxRequest = 4 << 20

const (
	// requestWait is how long the status socket waits for a request line
	// before it takes the connection for a plain status query.
	requestWait = time.Second
	// maxPingTimeout bounds one probe's wait.
	maxPingTimeout = time.Minute
)

// ErrUnknownPeer is returned by Ping for a peer the interface does not have.
var ErrUnknownPeer = errors.New("no such peer")

// unknownPeerError is the daemon's word that it has no such peer.
type unknownPeerError string

func (e unknownPeerError) Error() string        { return string(e) }
func (e unknownPeerError) Is(target error) bool { return target == ErrUnknownPeer }

// serveRequest answers a request line on a status connection, and reports
// whether there was one; without one, the caller serves the status.
func (t *Tunnel) serveRequest(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(requestWait))
	line, err := bufio.NewReaderSize(c, maxRequest).ReadSlice('\n')
	if len(line) == 0 && err != nil {
		return false // EOF or nothing: a status query
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil || req.Request != "ping" && req.Request != "syncconf" {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		json.NewEncoder(c).Encode(map[string]string{"error": fmt.Sprintf("unknown request %.100q", line)})
		return true
	}
	if req.Request == "syncconf" {
		c.SetDeadline(time.Now().Add(time.Minute))
		t.serveSyncConf(c, req) // reload.go
		return true
	}
	timeout := min(max(time.Duration(req.TimeoutMS)*time.Millisecond, 10*time.Millisecond), maxPingTimeout)
	c.SetDeadline(time.Now().Add(timeout + 5*time.Second))
	json.NewEncoder(c).Encode(t.Ping(req.Peer, timeout))
	return true
}

// Ping probes peer — its Name, its public key, or an address in its
// AllowedIPs — once over its current route and waits up to timeout for
// the pong.
func (t *Tunnel) Ping(peer string, timeout time.Duration) *PingReply {
	k, label, err := t.findPeer(peer)
	if err != nil {
		return &PingReply{Peer: peer, Error: err.Error(), UnknownPeer: errors.Is(err, ErrUnknownPeer)}
	}
	reply := &PingReply{Peer: label, PublicKey: k.String()}
	var (
		w    *probeWait
		sent Route
	)
	if !t.ctl.call(func() { w, sent, err = t.ctl.probe(k) }) {
		err = errors.New("the tunnel is going down")
	}
	if err != nil {
		reply.Error = err.Error()
		return reply
	}
	select {
	case res := <-w.done:
		reply.Path, reply.Endpoint = res.path, res.from.String()
		reply.RTTMillis = float64(res.at.Sub(w.sent).Microseconds()) / 1000
	case <-t.ctl.done:
		probes.Delete(w.tx)
		reply.Error = "the tunnel is going down"
	case <-time.After(timeout):
		probes.Delete(w.tx)
		reply.Error = fmt.Sprintf("no pong within %v (sent on the %s path to %s)", timeout, sent.Kind(), sent.Dst)
	}
	return reply
}

// findPeer resolves a peer by name, public key or virtual address (the
// most specific AllowedIPs prefix that holds it).
func (t *Tunnel) findPeer(s string) (key.Key, string, error) {
	addr, addrErr := netip.ParseAddr(s)
	best := -1
	var bestBits int
	cfg := t.config()
	for i, p := range cfg.Peers {
		if p.Name == s || p.PublicKey.String() == s {
			best = i
			break
		}
		if addrErr != nil {
			continue
		}
		for _, pre := range p.AllowedIPs {
			if pre.Contains(addr.Unmap()) && (best < 0 || pre.Bits() > bestBits) {
				best, bestBits = i, pre.Bits()
			}
		}
	}
	if best < 0 {
		return key.Key{}, "", fmt.Errorf("%w %q on %s (give its Name, public key or virtual IP)", ErrUnknownPeer, s, t.name)
	}
	p := cfg.Peers[best]
	if p.Endpoint != "" {
		return key.Key{}, "", fmt.Errorf("peer %s has a fixed Endpoint: it is plain WireGuard, which answers no probes; use ping on its virtual IP", peerLabel(p))
	}
	return p.PublicKey, peerLabel(p), nil
}

// probeWait is a probe in flight, keyed by its TxID in probes.
type probeWait struct {
	c    *control
	peer *peer
	tx   [12]byte
	sent time.Time
	done chan probeResult
}

type probeResult struct {
	at   time.Time
	from netip.AddrPort
	path string
}

// probes holds the probes of every interface in flight: TxIDs are random,
// and a pong counts only for the control plane and peer it was sent to.
var probes sync.Map // [12]byte → *probeWait

// probe sends p a probe on its current route, on the control goroutine.
// The pong arrives through probeAnswered.
func (c *control) probe(peerKey key.Key) (*probeWait, Route, error) {
	p := c.peers[peerKey]
	if p == nil {
		return nil, Route{}, errors.New("the peer has a fixed Endpoint: no probes")
	}
	r := p.ep.Route()
	if !r.Dst.IsValid() {
		return nil, r, fmt.Errorf("no path to %s yet (%s)", p.label(), p.path)
	}
	w := &probeWait{c: c, peer: p, sent: time.Now(), done: make(chan probeResult, 1)}
	rand.Read(w.tx[:])
	probes.Store(w.tx, w)
	m := &wire.Ping{TxID: w.tx}
	switch {
	case r.Relay:
		c.sendRelayedProbe(p, r, m)
	case r.Socket != nil:
		c.sendVia(r.Socket, p, r.Dst, m)
	default:
		c.sendSealed(r.Dst, &p.shared, m)
	}
	return w, r, nil
}

// probeAnswered takes a pong from p, which came in m, if it answers a
// probe of ours; it reports whether it did, and then the pong is not the
// Punch's.
func (c *control) probeAnswered(p *peer, m inbound, pong *wire.Pong) bool {
	v, ok := probes.Load(pong.TxID)
	if !ok {
		return false
	}
	w := v.(*probeWait)
	if w.c != c || w.peer != p {
		return false
	}
	probes.Delete(pong.TxID)
	path := nat.KindOf(m.src).String()
	switch {
	case m.tcp:
		path = "relay-tcp"
	case wire.IsRelay(m.pkt):
		path = "relay"
	}
	w.done <- probeResult{at: m.at, from: m.src, path: path}
	return true
}

// handleRelayedProbe takes a relay frame that carries a control message
// rather than WireGuard: a probe or a pong that came through a rendezvous.
// A probe is answered the way it came.
func (c *control) handleRelayedProbe(m inbound) {
	from, inner, err := wire.ParseRelay(m.pkt)
	p := c.peers[from]
	h, herr := wire.ParseHeader(inner)
	if p == nil || err != nil || herr != nil || h.Sender != from {
		c.Dropped.Add(1)
		return
	}
	body, ok := c.open(inner, h, &p.shared)
	if !ok {
		return
	}
	switch b := body.(type) {
	case *wire.Ping:
		var stream *wire.Stream
		if m.tcp {
			for _, s := range c.servers {
				if s.addr == m.src && s.stream != nil {
					stream = s.stream
				}
			}
			if stream == nil {
				c.Dropped.Add(1)
				return
			}
		}
		reply := Route{Dst: m.src, Stream: stream, TURN: m.turn}
		if !m.tcp && m.turn == nil && !c.isServer(m.src) {
			// From the peer's TURN relay, to our shared socket: the
			// answer goes back through our own allocation (turn.go).
			if reply = p.ep.Route(); reply.TURN == nil {
				c.Dropped.Add(1)
				return
			}
		}
		c.sendRelayedProbe(p, reply, &wire.Pong{TxID: b.TxID, Src: m.src})
	case *wire.Pong:
		if !c.probeAnswered(p, m, b) && !c.turnAnswered(b) {
			c.Dropped.Add(1)
		}
	default:
		c.Dropped.Add(1)
	}
}

// isServer reports whether addr is one of our rendezvous.
func (c *control) isServer(addr netip.AddrPort) bool {
	for _, s := range c.servers {
		if s.addr == addr || s.other == addr {
			return true
		}
	}
	return false
}

// sendRelayedProbe seals m for p and sends it the relayed way r says: in a
// relay frame to the rendezvous at r.Dst, over r.Stream if set, or
// through our TURN allocation to the peer's relayed address.
func (c *control) sendRelayedProbe(p *peer, r Route, m wire.Body) {
	sealed := wire.Seal(make([]byte, 0, wire.Overhead+64), m.Type(), c.pub, &p.shared, m.Append(nil))
	var err error
	switch {
	case r.Stream != nil:
		err = r.Stream.WriteRelayed(p.key, [][]byte{sealed})
	case r.TURN != nil:
		// Framed as for a rendezvous, so that the other side tells it
		// from a direct probe from the same address.
		if !r.TURN.Send(wire.AppendRelay(nil, c.pub, sealed), r.Dst) {
			err = errors.New("TURN send queue full")
		}
	default:
		err = c.bind.SendTo(wire.AppendRelay(make([]byte, 0, wire.RelayHeaderLen+len(sealed)), p.key, sealed), r.Dst)
	}
	if err != nil {
		c.log.Debug("relayed probe not sent", "peer", p.label(), "relay", r.Dst, "err", err)
	}
}

// isRelayedControl reports whether a relay frame carries a control message.
func isRelayedControl(frame []byte) bool {
	_, inner, err := wire.ParseRelay(frame)
	return err == nil && Classify(inner) == PacketControl
}

// Ping asks the punchtun running iface to probe peer once, waiting up to
// timeout for the pong. An interface without that peer returns an error
// that wraps ErrUnknownPeer.
func Ping(runDir, iface, peer string, timeout time.Duration) (*PingReply, error) {
	c, err := dialStatus(runDir, iface)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout + 10*time.Second))
	req, _ := json.Marshal(request{Request: "ping", Peer: peer, TimeoutMS: int(timeout / time.Millisecond)})
	if _, err := c.Write(append(req, '\n')); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(c).Decode(&raw); err != nil {
		return nil, fmt.Errorf("read ping reply of %s: %w", iface, err)
	}
	if _, isStatus := raw["interface"]; isStatus {
		return nil, fmt.Errorf("the punchtun running %s does not answer ping requests: it is older than this punchtun; restart it", iface)
	}
	var r PingReply
	b, _ := json.Marshal(raw)
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	switch {
	case r.UnknownPeer:
		return nil, unknownPeerError(r.Error)
	case r.PublicKey == "" && r.Error != "":
		return nil, errors.New(r.Error)
	}
	return &r, nil
}
