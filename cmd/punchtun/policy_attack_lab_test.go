//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A member that does not play by the network's rules, in the lab (issue
// 32): it routes past the rules to addresses its peer holds elsewhere,
// and it floods SYNs to fill its peer's flow table.

// TestPolicyDestination: a laptop allowed tcp/22 on servers widens the
// server's AllowedIPs on its own side (wg set) and routes an address the
// server holds on another interface (a veth, with a listener on port 22)
// into the tunnel: it reaches nothing there, and the rule still works for
// the server's network address.
func TestPolicyDestination(t *testing.T) {
	t.Parallel()
	requireTools(t, "wireguard-tools", "wg")
	l := newNetLab(t, "ptdst", "easy", "easy")
	laptop := newPeer(t, "a1", "ptdst1", "100.64.5.1")
	server := newPeer(t, "b1", "ptdst2", "100.64.5.2")
	rules := filepath.Join(l.dir, "rules.ini")
	os.WriteFile(rules, []byte(laptopsToServersRules), 0o644)
	pol := l.signDoc("pol", l.keyFile, "policy", "--seq", "1", rules)
	for _, m := range []struct {
		p           *peerSpec
		name, group string
	}{{laptop, "laptop", "laptops"}, {server, "server", "servers"}} {
		l.startPeer(m.p, l.memberConfig(m.p, l.sign(m.p, m.name, l.keyFile, "--group", m.group), "Policy = "+pol+"\n"), m.p.iface)
	}
	l.waitSeq(10*time.Second, 1, laptop, server)

	// The server holds 10.77.0.1 on another interface (a veth pair within
	// its namespace, as a container bridge would be); nc listens on port
	// 22 of every address.
	const hidden = "10.77.0.1"
	l.run(server.host, "ip", "link", "add", "ptdum", "type", "veth", "peer", "name", "ptdum-c")
	l.run(server.host, "ip", "addr", "add", hidden+"/24", "dev", "ptdum")
	l.run(server.host, "ip", "link", "set", "ptdum", "up")
	l.run(server.host, "ip", "link", "set", "ptdum-c", "up")
	listener := l.start(server.host, "nc-22", "nc", "-l", "-k", "-p", "22")
	defer listener.stop()
	l.firstPing(laptop, server) // the laptop has the server in WireGuard
	if !l.tcpOpens(laptop, server, 22) {
		t.Fatal("the laptop does not reach port 22 at the server's network address")
	}

	// The laptop's owner widens the server's AllowedIPs on the laptop and
	// routes the hidden address into the tunnel.
	l.run(laptop.host, "wg", "set", laptop.iface, "peer", server.priv.Public().String(), "allowed-ips", server.addr+"/32,"+hidden+"/32")
	l.run(laptop.host, "ip", "route", "add", hidden+"/32", "dev", laptop.iface)
	t.Logf("the laptop's AllowedIPs for the server: %s", strings.TrimSpace(l.run(laptop.host, "wg", "show", laptop.iface, "allowed-ips")))
	opened := l.cmd(laptop.host, "nc", "-z", "-w", "2", hidden, "22").Run() == nil
	st, err := l.status(server)
	if err != nil || st.Network.Policy == nil {
		t.Fatalf("the server's status: %v", err)
	}
	t.Logf("laptop → %s:22 through the server: opened %v; the server dropped %v", hidden, opened, st.Network.Policy.Dropped)
	if opened {
		t.Errorf("the laptop opened port 22 at %s, an address the server holds outside the network", hidden)
	}
	if st.Network.Policy.Dropped["destination"] == 0 || st.Network.Filtered["destination"] == 0 {
		t.Errorf("the server counted no drop under destination: policy %v, filtered %v", st.Network.Policy.Dropped, st.Network.Filtered)
	}
	if !l.tcpOpens(laptop, server, 22) {
		t.Error("the rule no longer lets the laptop reach port 22 at the server's network address")
	}
}

// TestPolicyFlowFlood: a member allowed tcp/22 and tcp/23 on a server
// sends SYNs from every source port to both (raw packets, from this test
// binary run again in its namespace); the server still opens a new
// connection to another member, as fast as before the flood.
// Not parallel: its flood loads the machine, and its bounds need the
// machine to themselves (serial tests run before the parallel ones).
func TestPolicyFlowFlood(t *testing.T) {
	l := newNetLab(t, "ptflo", "easy", "easy")
	flooder := newPeer(t, "a1", "ptflo1", "100.64.6.1")
	victim := newPeer(t, "b1", "ptflo2", "100.64.6.2")
	other := newPeer(t, "pub", "ptflo3", "100.64.6.3")
	rules := filepath.Join(l.dir, "rules.ini")
	os.WriteFile(rules, []byte("[Rule]\nFrom = *\nTo = group:servers\nAllow = tcp/22, tcp/23, icmp\n"), 0o644)
	pol := l.signDoc("pol", l.keyFile, "policy", "--seq", "1", rules)
	for _, m := range []struct {
		p           *peerSpec
		name, group string
	}{{flooder, "flooder", "laptops"}, {victim, "victim", "servers"}, {other, "other", "servers"}} {
		l.startPeer(m.p, l.memberConfig(m.p, l.sign(m.p, m.name, l.keyFile, "--group", m.group), "Policy = "+pol+"\n"), m.p.iface)
	}
	l.waitSeq(10*time.Second, 1, flooder, victim, other)
	listener := l.start(other.host, "nc-22", "nc", "-l", "-k", "-s", other.addr, "-p", "22")
	defer listener.stop()
	l.firstPing(flooder, victim)
	l.firstPing(victim, other)

	// connect is how long the victim takes to open a new connection to
	// the other member (0: it did not within 3 s).
	connect := func() time.Duration {
		start := time.Now()
		if l.cmd(victim.host, "nc", "-z", "-w", "3", other.addr, "22").Run() != nil {
			return 0
		}
		return time.Since(start)
	}
	before := connect()
	if before == 0 {
		t.Fatal("before the flood, the victim does not open a connection to the other member")
	}

	flood := l.cmd(flooder.host, os.Args[0], "-test.run=^$")
	flood.Env = append(os.Environ(), "PUNCHTUN_TEST_SYNFLOOD="+flooder.addr+" "+victim.addr+" 22,23")
	out, err := flood.CombinedOutput()
	if err != nil {
		t.Fatalf("the flood: %v\n%s", err, out)
	}
	st, err := l.status(victim)
	if err != nil || st.Network.Policy == nil {
		t.Fatalf("the victim's status: %v", err)
	}
	after := connect()
	t.Logf("%s; the victim tracks %d flows, refused %d; its new connection to another member took %v before the flood, %v after (0: none within 3 s)",
		strings.TrimSpace(string(out)), st.Network.Policy.Flows, st.Network.Policy.FlowsRefused, before.Round(time.Millisecond), after.Round(time.Millisecond))
	if after == 0 {
		t.Error("after the flood, the victim's new connection to another member gets no reply")
	}
	if st.Network.Policy.Flows > 4096 {
		t.Errorf("the flooder holds %d flows of the victim's table, want at most its share", st.Network.Policy.Flows)
	}
}

// The flooder: this test binary, run with PUNCHTUN_TEST_SYNFLOOD="SRC DST
// PORT,PORT" in the flooder's namespace, sends a SYN from SRC to DST's
// ports from every source port, and says how many it sent in how long.
func init() {
	spec := os.Getenv("PUNCHTUN_TEST_SYNFLOOD")
	if spec == "" {
		return
	}
	if err := synFlood(spec); err != nil {
		fmt.Fprintln(os.Stderr, "synflood:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func synFlood(spec string) error {
	var src, dst, ports string
	if _, err := fmt.Sscan(spec, &src, &dst, &ports); err != nil {
		return err
	}
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	to := &syscall.SockaddrInet4{Addr: d}
	start, sent := time.Now(), 0
	deadline := start.Add(60 * time.Second)
	pkt := make([]byte, 40)
	// Every source port to each port, twice: what the tunnel loses of the
	// first pass (it drops what it cannot carry) the second brings.
	for i := range 2 * 65535 {
		sport := i%65535 + 1
		for _, p := range strings.Split(ports, ",") {
			var dport uint16
			fmt.Sscan(p, &dport)
			synPacket(pkt, s, d, uint16(sport), dport)
			for syscall.Sendto(fd, pkt, 0, to) != nil { // a full queue: wait for it
				if time.Now().After(deadline) {
					return fmt.Errorf("sent %d SYNs, then the queue stayed full", sent)
				}
				time.Sleep(time.Millisecond)
			}
			sent++
			if sent%64 == 0 {
				time.Sleep(time.Millisecond) // leave the tunnel time to carry them
			}
		}
	}
	fmt.Printf("the flooder sent %d SYNs in %v", sent, time.Since(start).Round(time.Millisecond))
	return nil
}

// synPacket writes an IPv4 TCP SYN from s:sport to d:dport into pkt (40
// bytes); the kernel fills the IP header's length, id and checksum.
func synPacket(pkt []byte, s, d [4]byte, sport, dport uint16) {
	clear(pkt)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, 6
	copy(pkt[12:16], s[:])
	copy(pkt[16:20], d[:])
	tcp := pkt[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], rand.Uint32())
	tcp[12], tcp[13] = 5<<4, 0x02
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	sum := uint32(0)
	for i := 12; i < 20; i += 2 { // the pseudo-header: addresses, protocol, length
		sum += uint32(binary.BigEndian.Uint16(pkt[i:]))
	}
	sum += 6 + 20
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(tcp[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(tcp[16:], ^uint16(sum))
}
