//go:build linux

// Command loadgen measures a punchtun rendezvous under load: it starts a
// real `punchtun rendezvous` process on loopback, registers and queries many
// simulated peers over UDP, and prints registrations and queries per second
// and the server's resident memory at each checkpoint (10k and 100k
// registered peers by default).
//
//	go run ./rendezvous/loadgen [-peers 100000] [-sockets 5000] [-bin punchtun]
//
// Every simulated peer has its own Curve25519 key, made up front (two
// scalar multiplications each: its public key and its shared key with the
// server), and registers as the server's real peers do, with two candidates
// and one wanted peer: peers 2k and 2k+1 want each other, so that a query
// from one is answered by introducing both. Peers are spread over many
// sockets, each bound to its own loopback address (127.1.x.y) so that the
// server's per-source rate limit sees many sources; each socket carries its
// peers one exchange at a time, and all sockets run at once. A message
// without its answer within -timeout is sent again (with a new Time) and
// counted as a retry.
//
// Phases: register the peers up to each checkpoint (new keys: the server
// computes a shared key for each), then refresh every registration (known
// keys: the steady state, one refresh per peer every 25 s), then one query
// per pair (two introductions each). The client runs on the same machine,
// so the rates are those of client and server sharing its cores.
//
// With -networks N the peers are members of N networks instead:
// each registers with a certificate its network's key signed (the server
// verifies each new one: an Ed25519 signature check), lists no peers, and
// the last phase looks the pair's other half up by address.
package main

import (
	"bufio"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

type peer struct {
	pub    key.Key
	shared wire.SharedKey
	last   uint64  // the last Time sent
	member *member // with -networks
}

// next returns a Time above the peer's last one.
func (p *peer) next() uint64 {
	t := uint64(time.Now().UnixNano())
	if t <= p.last {
		t = p.last + 1
	}
	p.last = t
	return t
}

type counters struct {
	ok, retries, failed atomic.Uint64
}

func main() {
	nPeers := flag.Int("peers", 100_000, "simulated peers (even)")
	nSockets := flag.Int("sockets", 5000, "client sockets, each on its own loopback address")
	bin := flag.String("bin", "", "punchtun binary (default: go build ./cmd/punchtun into a temporary directory)")
	serverArgs := flag.String("server-args", "--log-level warn --listen-tcp off --max-peers 1000000",
		"extra arguments for `punchtun rendezvous`")
	checkpoints := flag.String("checkpoints", "10000,100000", "registered-peer counts at which to report the server's memory")
	timeout := flag.Duration("timeout", time.Second, "answer timeout before a message is sent again")
	inflight := flag.Int("inflight", 256, "most exchanges under way at once: more overflow the server's socket buffer (about 300 messages of this size by default)")
	networks := flag.Int("networks", 0, "make the peers members of this many networks, registering with certificates and looking each other up (0: peers that list each other)")
	flag.Parse()
	if err := run(*nPeers, *nSockets, *inflight, *networks, *bin, *serverArgs, *checkpoints, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(nPeers, nSockets, inflight, networks int, bin, serverArgs, checkpointList string, timeout time.Duration) error {
	if nPeers < 2 || nPeers%2 != 0 {
		return errors.New("-peers must be even and at least 2")
	}
	nSockets = min(nSockets, nPeers/2, 65536)
	var checkpoints []int
	for _, f := range strings.Split(checkpointList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || n%2 != 0 {
			return fmt.Errorf("bad checkpoint %q (want positive even numbers)", f)
		}
		if n < nPeers && (len(checkpoints) == 0 || n > checkpoints[len(checkpoints)-1]) {
			checkpoints = append(checkpoints, n)
		}
	}
	checkpoints = append(checkpoints, nPeers)
	raiseFileLimit(nSockets + 1024)

	dir, err := os.MkdirTemp("", "loadgen")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		bin = filepath.Join(dir, "punchtun")
		fmt.Println("building punchtun")
		build := exec.Command("go", "build", "-o", bin, "./cmd/punchtun")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build (run from the repository's root): %w", err)
		}
	}

	// The keys, up front: this is the client's cost, not the server's.
	serverPriv, err := key.NewPrivate()
	if err != nil {
		return err
	}
	serverPub := serverPriv.Public()
	start := time.Now()
	peers := makePeers(nPeers, serverPub)
	d := time.Since(start)
	fmt.Printf("keys: %d peers in %v (%.1f µs per peer for two scalar multiplications, %d goroutines)\n",
		nPeers, d.Round(time.Millisecond), float64(d.Microseconds())/float64(nPeers), runtime.GOMAXPROCS(0))
	if networks > 0 {
		start := time.Now()
		if err := makeMembers(peers, networks); err != nil {
			return err
		}
		fmt.Printf("certificates: %d members of %d networks signed in %v\n", nPeers, networks, time.Since(start).Round(time.Millisecond))
	}

	// The server.
	keyFile := filepath.Join(dir, "rendezvous.key")
	if err := os.WriteFile(keyFile, []byte(serverPriv.Encode()+"\n"), 0o600); err != nil {
		return err
	}
	addr, err := freeUDPPort()
	if err != nil {
		return err
	}
	args := append([]string{"rendezvous", "--listen", addr.String(), "--key-file", keyFile}, strings.Fields(serverArgs)...)
	srv := exec.Command(bin, args...)
	srv.Stdout, srv.Stderr = os.Stdout, os.Stderr
	if err := srv.Start(); err != nil {
		return err
	}
	fmt.Printf("server: %s %s (pid %d)\n", bin, strings.Join(args, " "), srv.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			srv.Process.Kill()
			<-exited
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Process.Kill()
		os.Exit(130)
	}()

	socks, err := openSockets(nSockets)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	fmt.Printf("client: %d sockets on 127.1.0.0–127.1.%d.%d, at most %d exchanges at once, answer timeout %v\n",
		len(socks), (len(socks)-1)>>8, (len(socks)-1)&255, inflight, timeout)

	// Warm up: one peer registers until the server answers.
	warm := makePeers(2, serverPub)
	var wc counters
	deadline := time.Now().Add(10 * time.Second)
	for wc.ok.Load() == 0 {
		if time.Now().After(deadline) {
			return errors.New("the server does not answer")
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the server exited: %v", err)
		default:
		}
		register(socks[0], addr, warm, 0, 200*time.Millisecond, 1, &wc)
	}
	fmt.Printf("server: idle RSS %s\n", memory(srv.Process.Pid))

	// pairsOf returns the pairs socket s carries among pairs [lo, hi).
	pairsOf := func(s, lo, hi int) []int {
		var out []int
		first := lo + ((s-lo)%len(socks)+len(socks))%len(socks)
		for p := first; p < hi; p += len(socks) {
			out = append(out, p)
		}
		return out
	}
	type op func(c *net.UDPConn, pair int, st *counters)
	tokens := make(chan struct{}, max(inflight, 1))
	phase := func(name string, lo, hi int, f op) {
		var st counters
		var wg sync.WaitGroup
		start, srvCPU, ownCPU := time.Now(), cpuTime(srv.Process.Pid), ownCPUTime()
		for s, c := range socks {
			pairs := pairsOf(s, lo, hi)
			if len(pairs) == 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, p := range pairs {
					tokens <- struct{}{}
					f(c, p, &st)
					<-tokens
				}
			}()
		}
		wg.Wait()
		d := time.Since(start)
		n := st.ok.Load()
		fmt.Printf("%-36s %7d in %6.2fs = %8.0f/s  retries %d, failed %d\n", name, n, d.Seconds(), float64(n)/d.Seconds(), st.retries.Load(), st.failed.Load())
		// The server's own CPU per operation tells what it could do with
		// the machine to itself, the client elsewhere.
		srvUsed, ownUsed := cpuTime(srv.Process.Pid)-srvCPU, ownCPUTime()-ownCPU
		if n > 0 && srvUsed > 0 {
			perOp := srvUsed / time.Duration(n)
			fmt.Printf("%-36s server %.2f cores (%v CPU per op: %.0f/s on %d cores alone), client %.2f cores\n", "",
				srvUsed.Seconds()/d.Seconds(), perOp.Round(100*time.Nanosecond),
				float64(runtime.NumCPU())/perOp.Seconds(), runtime.NumCPU(), ownUsed.Seconds()/d.Seconds())
		}
	}
	registerPair := func(c *net.UDPConn, pair int, st *counters) {
		register(c, addr, peers, 2*pair, timeout, 5, st)
		register(c, addr, peers, 2*pair+1, timeout, 5, st)
	}

	done := 0
	for _, cp := range checkpoints {
		phase(fmt.Sprintf("register new peers %d–%d", done+1, cp), done/2, cp/2, registerPair)
		done = cp
		fmt.Printf("server RSS at %d registered peers: %s\n", cp, memory(srv.Process.Pid))
	}
	phase(fmt.Sprintf("refresh %d registrations", nPeers), 0, nPeers/2, registerPair)
	what := "query"
	if networks > 0 {
		what = "lookup"
	}
	phase(fmt.Sprintf("%s (%d pairs, 2 intros each)", what, nPeers/2), 0, nPeers/2, func(c *net.UDPConn, pair int, st *counters) {
		query(c, addr, peers, pair, timeout, 5, st)
	})
	fmt.Printf("server RSS at the end: %s\n", memory(srv.Process.Pid))
	select {
	case err := <-exited:
		return fmt.Errorf("the server exited: %v", err)
	default:
	}
	return nil
}

// makePeers makes n peers with their keys, on all cores.
func makePeers(n int, serverPub key.Key) []peer {
	peers := make([]peer, n)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				var priv key.Private
				rand.Read(priv[:])
				priv[0] &= 248 // clamp, as key.NewPrivate does
				priv[31] = priv[31]&127 | 64
				peers[i].pub = priv.Public()
				peers[i].shared = wire.NewSharedKey(priv, serverPub)
			}
		}()
	}
	wg.Wait()
	return peers
}

// candidates are what a peer behind a home router would report.
func candidates(i int) []netip.AddrPort {
	return []netip.AddrPort{
		netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), 51820),
		netip.AddrPortFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}), 51820),
	}
}

// register registers peers[i] (who wants its pair's other half) and waits
// for the acknowledgement.
func register(c *net.UDPConn, srv netip.AddrPort, peers []peer, i int, timeout time.Duration, tries int, st *counters) {
	p := &peers[i]
	buf := make([]byte, 0, 512)
	rbuf := make([]byte, 2048)
	for try := 0; try < tries; try++ {
		if try > 0 {
			st.retries.Add(1)
		}
		m := wire.Register{Time: p.next(), NAT: 1, Candidates: candidates(i), Wants: []key.Key{peers[i^1].pub}}
		if p.member != nil {
			m.Wants, m.Network, m.Cert = nil, p.member.network, p.member.cert
		}
		pkt := wire.Seal(buf[:0], wire.TypeRegister, p.pub, &p.shared, m.Append(nil))
		if _, err := c.WriteToUDPAddrPort(pkt, srv); err != nil {
			continue
		}
		if await(c, rbuf, timeout, 1, func(h wire.Header, b []byte) bool {
			if h.Type != wire.TypeRegisterAck {
				return false // an introduction, when the pair's second half registers
			}
			_, err := wire.Open(b, &p.shared)
			return err == nil
		}) {
			st.ok.Add(1)
			return
		}
	}
	st.failed.Add(1)
}

// query asks the server to introduce peer 2·pair to peer 2·pair+1 (for
// members: looks up its address) and waits for both introductions.
func query(c *net.UDPConn, srv netip.AddrPort, peers []peer, pair int, timeout time.Duration, tries int, st *counters) {
	a, b := &peers[2*pair], &peers[2*pair+1]
	buf := make([]byte, 0, 256)
	rbuf := make([]byte, 2048)
	for try := 0; try < tries; try++ {
		if try > 0 {
			st.retries.Add(1)
		}
		t := a.next()
		var m wire.Body = &wire.Query{Time: t, Peer: b.pub}
		if b.member != nil {
			m = &wire.Lookup{Time: t, Addr: b.member.addr}
		}
		pkt := wire.Seal(buf[:0], m.Type(), a.pub, &a.shared, m.Append(nil))
		if _, err := c.WriteToUDPAddrPort(pkt, srv); err != nil {
			continue
		}
		var gotA, gotB bool
		if await(c, rbuf, timeout, 2, func(h wire.Header, pkt []byte) bool {
			if h.Type != wire.TypeIntro {
				return false
			}
			if _, err := wire.Open(pkt, &a.shared); err == nil && !gotA {
				gotA = true
				return true
			}
			if _, err := wire.Open(pkt, &b.shared); err == nil && !gotB {
				gotB = true
				return true
			}
			return false
		}) {
			st.ok.Add(1)
			return
		}
	}
	st.failed.Add(1)
}

// await reads from c until want packets pass match or timeout passes.
func await(c *net.UDPConn, buf []byte, timeout time.Duration, want int, match func(wire.Header, []byte) bool) bool {
	c.SetReadDeadline(time.Now().Add(timeout))
	for want > 0 {
		n, err := c.Read(buf)
		if err != nil {
			return false
		}
		h, err := wire.ParseHeader(buf[:n])
		if err == nil && match(h, buf[:n]) {
			want--
		}
	}
	return true
}

func openSockets(n int) ([]*net.UDPConn, error) {
	socks := make([]*net.UDPConn, 0, n)
	for s := range n {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, byte(s >> 8), byte(s)}), 0)
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(a))
		if err != nil {
			for _, c := range socks {
				c.Close()
			}
			return nil, fmt.Errorf("socket %d on %v: %w", s, a.Addr(), err)
		}
		socks = append(socks, c)
	}
	return socks, nil
}

func freeUDPPort() (netip.AddrPort, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort(), nil
}

func raiseFileLimit(n int) {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < uint64(n) {
		rl.Cur = max(uint64(n), rl.Cur)
		if rl.Max < rl.Cur {
			rl.Max = rl.Cur // works as root
		}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

// cpuTime returns the user and system time a process has used, from
// /proc/PID/stat (in USER_HZ ticks, 100 a second on every Linux), or 0.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing one. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// ownCPUTime returns the user and system time this process has used.
func ownCPUTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memory returns a process's VmRSS and VmHWM (its peak) from /proc.
func memory(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	var rss, hwm string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.Atoi(fields[1])
		switch fields[0] {
		case "VmRSS:":
			rss = fmt.Sprintf("%.1f MiB", float64(kb)/1024)
		case "VmHWM:":
			hwm = fmt.Sprintf("%.1f MiB", float64(kb)/1024)
		}
	}
	return fmt.Sprintf("%s (peak %s)", rss, hwm)
}
