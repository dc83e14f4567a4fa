// Command flood is a hostile host for the rendezvous flood test
// (cmd/punchtun's TestFloodRendezvous): for a while, it sends the
// rendezvous every kind of packet an attacker can make without a real
// peer's private key, and prints how many of each it sent as one JSON
// object.
//
// It is a test tool, kept out of the punchtun binary.
package main

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// Kinds of packets, sent in turn.
var kinds = []string{
	"random",         // random bytes of random length
	"truncated",      // a real registration cut short: header or box
	"oversized",      // a control message longer than any real one
	"forged_victim",  // a registration naming a real peer's key, sealed with another
	"forged_new_key", // a registration naming a made-up key: costs the server a key computation
	"replay",         // a real peer's captured registration, again
	"stun_garbage",   // a STUN header with nonsense behind it, or not a request
	"stun_request",   // a valid STUN binding request
}

func main() {
	var targets stringList
	flag.Var(&targets, "target", "rendezvous address; may be given more than once")
	duration := flag.Duration("duration", 10*time.Second, "how long to flood")
	pps := flag.Int("pps", 20000, "packets per second, in all")
	rvKey := flag.String("rendezvous-key", "", "the rendezvous's public key")
	victims := flag.String("victims", "", "comma-separated public keys of real peers, to forge")
	replays := flag.String("replays", "", "file of captured registrations, each behind its length (2 bytes, big-endian)")
	flag.Parse()
	if err := run(targets, *duration, *pps, *rvKey, *victims, *replays); err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func run(targets []string, duration time.Duration, pps int, rvKey, victimList, replayFile string) error {
	if len(targets) == 0 || pps <= 0 {
		return errors.New("need -target and a positive -pps")
	}
	var dsts []netip.AddrPort
	for _, t := range targets {
		ap, err := netip.ParseAddrPort(t)
		if err != nil {
			return err
		}
		dsts = append(dsts, ap)
	}
	rv, err := key.Parse(rvKey)
	if err != nil {
		return fmt.Errorf("-rendezvous-key: %w", err)
	}
	var victims []key.Key
	for _, v := range strings.Split(victimList, ",") {
		k, err := key.Parse(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("-victims: %w", err)
		}
		victims = append(victims, k)
	}
	captured, err := readReplays(replayFile)
	if err != nil {
		return err
	}
	pools := makePools(rv, victims, captured)

	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	sent := make(map[string]uint64)
	var errs uint64
	start := time.Now()
	// Send in bursts every millisecond, to hold the rate without a timer per
	// packet.
	const tick = time.Millisecond
	var due float64
	next := start
	for i := 0; time.Since(start) < duration; {
		next = next.Add(tick)
		time.Sleep(time.Until(next))
		due += float64(pps) * tick.Seconds()
		for ; due >= 1; due-- {
			kind := kinds[i%len(kinds)]
			pool := pools[kind]
			pkt := pool[(i/len(kinds))%len(pool)]
			if _, err := conn.WriteToUDPAddrPort(pkt, dsts[i%len(dsts)]); err != nil {
				errs++ // a full socket buffer: the packet is lost, count it apart
			} else {
				sent[kind]++
			}
			i++
		}
	}
	var total uint64
	for _, n := range sent {
		total += n
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"sent": sent, "total": total, "send_errors": errs, "seconds": time.Since(start).Seconds(),
	})
}

func readReplays(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-replays: %w", err)
	}
	var out [][]byte
	for len(b) >= 2 {
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, errors.New("-replays: truncated file")
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	if len(out) == 0 {
		return nil, errors.New("-replays: no registrations")
	}
	return out, nil
}

// makePools prepares packets of each kind, so that sending costs nothing
// but the write.
func makePools(rv key.Key, victims []key.Key, captured [][]byte) map[string][][]byte {
	const n = 256
	eve, _ := key.NewPrivate()
	eveShared := wire.NewSharedKey(eve, rv)
	pools := make(map[string][][]byte)
	randBytes := func(l int) []byte {
		b := make([]byte, l)
		rand.Read(b)
		return b
	}
	randInt := func(lo, hi int) int {
		var v [4]byte
		rand.Read(v[:])
		return lo + int(binary.BigEndian.Uint32(v[:])%uint32(hi-lo))
	}
	now := uint64(time.Now().UnixNano())
	for i := 0; i < n; i++ {
		// random: never by chance one of the prefixes the server sorts by.
		r := randBytes(randInt(1, 1473))
		r[0] = 0xff
		pools["random"] = append(pools["random"], r)

		c := captured[i%len(captured)]
		if i%2 == 0 {
			pools["truncated"] = append(pools["truncated"], c[:randInt(len(wire.Magic), wire.Overhead)])
		} else {
			pools["truncated"] = append(pools["truncated"], c[:randInt(wire.Overhead, len(c))])
		}

		big := append(append([]byte(nil), c...), randBytes(randInt(9000, 16000))...)
		pools["oversized"] = append(pools["oversized"], big)

		v := victims[i%len(victims)]
		reg := &wire.Register{Time: now + uint64(i), Candidates: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.20:6666")}, Wants: []key.Key{eve.Public()}}
		pools["forged_victim"] = append(pools["forged_victim"], wire.Seal(nil, wire.TypeRegister, v, &eveShared, reg.Append(nil)))

		var made key.Key
		rand.Read(made[:])
		pools["forged_new_key"] = append(pools["forged_new_key"], wire.Seal(nil, wire.TypeRegister, made, &eveShared, reg.Append(nil)))

		pools["replay"] = append(pools["replay"], c)

		stun := make([]byte, 20+randInt(0, 64))
		rand.Read(stun)
		stun[0] &= 0x3f                                  // first two bits zero
		binary.BigEndian.PutUint32(stun[4:], 0x2112a442) // the magic cookie
		if i%2 == 0 {
			binary.BigEndian.PutUint16(stun[2:], uint16(len(stun)-20+4)) // a length beyond the message
		} else {
			binary.BigEndian.PutUint16(stun[0:], 0x0101) // a binding success, not a request
			binary.BigEndian.PutUint16(stun[2:], 0)
			stun = stun[:20]
		}
		pools["stun_garbage"] = append(pools["stun_garbage"], stun)

		req := make([]byte, 20)
		binary.BigEndian.PutUint16(req[0:], 0x0001)
		binary.BigEndian.PutUint32(req[4:], 0x2112a442)
		rand.Read(req[8:])
		pools["stun_request"] = append(pools["stun_request"], req)
	}
	return pools
}
