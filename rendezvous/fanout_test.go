package rendezvous

import (
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/punchtun/punchtun/nat"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// TestFanOutStarvesNoOne: while three members of a 10,000-member network
// hand in new policies as fast as their keys' rate allows, an unrelated
// peer's registrations and STUN requests are answered within 100 ms, and
// what the rendezvous sends that network's members stays within its
// bound (fanoutRate, with fanoutBurst at the start).
func TestFanOutStarvesNoOne(t *testing.T) {
	if testing.Short() {
		t.Skip("registers 10,000 members")
	}
	// No per-address budget: the members share a few sockets, and what
	// is tested is the fan-out's own bound.
	s, addr, pub := startServerWith(t, Config{SourceRate: -1, NewKeyRate: -1})
	nk := newNetwork(t)
	const members, sockets, publishers = 10_000, 8, 3
	start := time.Now()

	// The members' sockets only count what comes to them.
	var got atomic.Uint64
	conns := make([]*net.UDPConn, sockets)
	var readers sync.WaitGroup
	for i := range conns {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadBuffer(4 << 20)
		conns[i] = c
		readers.Add(1)
		go func() {
			defer readers.Done()
			buf := make([]byte, 2048)
			for {
				n, _, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				got.Add(uint64(n))
			}
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		readers.Wait()
	}()

	// Registrations, made up front on every core, sent in rounds.
	regs := make([][]byte, members-publishers)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(regs); i += workers {
				priv, _ := key.NewPrivate()
				shared := wire.NewSharedKey(priv, pub)
				ip := netip.AddrFrom4([4]byte{10, 8, byte(i >> 8), byte(i)})
				c, err := cert.Sign(nk, cert.Template{Member: priv.Public(), Name: "m" + strconv.Itoa(i), Addresses: []netip.Prefix{netip.PrefixFrom(ip, 32)},
					NotBefore: start, NotAfter: start.Add(time.Hour)})
				if err != nil {
					t.Error(err)
					return
				}
				m := &wire.Register{Time: uint64(time.Now().UnixNano()), Network: nk.Public(), Cert: c.Bytes()}
				regs[i] = wire.Seal(nil, m.Type(), priv.Public(), &shared, m.Append(nil))
			}
		}()
	}
	wg.Wait()
	const round = 500
	for i := 0; i < len(regs); i += round {
		for j := i; j < min(i+round, len(regs)); j++ {
			conns[j%sockets].WriteToUDPAddrPort(regs[j], addr)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if n, _ := s.Members(); n >= min(i+round, len(regs)) {
				break
			}
			if time.Now().After(deadline) {
				n, _ := s.Members()
				t.Fatalf("%d of %d members registered", n, min(i+round, len(regs)))
			}
		}
	}
	pubs := make([]*client, publishers)
	for i := range pubs {
		pubs[i] = newClient(t, addr, pub)
		pubs[i].registerQuick(certFor(t, nk, pubs[i].pub(), "p"+string(rune('a'+i)), "10.9.0."+string(rune('1'+i))+"/32", start, time.Hour), nk.Public())
	}
	t.Logf("%d members registered in %v", members, time.Since(start).Round(time.Millisecond))

	// The unrelated peer measures while the publishers publish.
	other := newClient(t, addr, pub)
	other.register()
	const window = 3 * time.Second
	var (
		worstReg, worstSTUN time.Duration
		lost                int
	)
	seq := uint64(0)
	pubsDone := make(chan struct{})
	go func() {
		defer close(pubsDone)
		tick := time.NewTicker(100 * time.Millisecond) // the per-key rate: 10/s
		defer tick.Stop()
		for end := time.Now().Add(window); time.Now().Before(end); <-tick.C {
			for _, p := range pubs {
				seq++
				pol, _ := cert.SignPolicy(nk, seq, nil)
				p.send(&wire.Publish{Time: p.now(), Doc: pol.Bytes()})
			}
		}
	}()
	before := got.Load()
	t0 := time.Now()
	for time.Since(t0) < window {
		sent := time.Now()
		other.send(&wire.Register{Time: other.now()})
		if _, ok := other.recv(time.Second).(*wire.RegisterAck); !ok {
			lost++
		} else {
			worstReg = max(worstReg, time.Since(sent))
		}
		_, req := nat.NewBindingRequest()
		sent = time.Now()
		other.sendRaw(req)
		other.conn.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 1500)
		if n, _, err := other.conn.ReadFromUDPAddrPort(buf); err != nil || !nat.IsSTUN(buf[:n]) {
			lost++
		} else {
			worstSTUN = max(worstSTUN, time.Since(sent))
		}
		time.Sleep(150 * time.Millisecond) // within the peer key's rate (10/s); a pace, not a condition
	}
	<-pubsDone
	elapsed := time.Since(t0)
	out := got.Load() - before
	bound := uint64(fanoutBurst + fanoutRate*elapsed.Seconds())
	t.Logf("over %v: %d policies handed in, %d taken; worst registration %v, worst STUN %v, %d unanswered; %d bytes to the network's members (%.2f MB/s), bound %d",
		elapsed.Round(time.Millisecond), seq, s.Stats.Documents.Load(), worstReg, worstSTUN, lost, out, float64(out)/elapsed.Seconds()/1e6, bound)
	if lost > 0 || worstReg > 100*time.Millisecond || worstSTUN > 100*time.Millisecond {
		t.Errorf("an unrelated peer waited: worst registration %v, worst STUN %v, %d unanswered", worstReg, worstSTUN, lost)
	}
	if out > bound {
		t.Errorf("the network's members got %d bytes in %v, over the bound %d", out, elapsed, bound)
	}
}
