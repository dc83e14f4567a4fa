package turnrelay

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"

	"github.com/punchtun/punchtun/rendezvous"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

const secret = "test-secret"

// startServer runs pion's TURN server on loopback with the REST scheme
// coturn's use-auth-secret uses, over UDP and TCP.
func startServer(t *testing.T) (udp, tcp string) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	relay := &turn.RelayAddressGeneratorStatic{RelayAddress: net.IPv4(127, 0, 0, 1), Address: "127.0.0.1"}
	s, err := turn.NewServer(turn.ServerConfig{
		Realm:             "punchtun.test",
		AuthHandler:       turn.LongTermTURNRESTAuthHandler(secret, logging.NewDefaultLoggerFactory().NewLogger("auth")),
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: pc, RelayAddressGenerator: relay}},
		ListenerConfigs:   []turn.ListenerConfig{{Listener: ln, RelayAddressGenerator: relay}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return "turn:" + pc.LocalAddr().String(), "turn:" + ln.Addr().String() + "?transport=tcp"
}

func credentials(t *testing.T, secret string) (string, string) {
	k, _ := key.NewPrivate()
	return rendezvous.TURNCredentials([]byte(secret), k.Public(), time.Now().Add(time.Hour))
}

func mustAllocate(t *testing.T, uri, secret string) *Allocation {
	t.Helper()
	user, pass := credentials(t, secret)
	a, err := Allocate(context.Background(), Config{URI: uri, Username: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// TestRelayBetweenAllocations: two peers, one on UDP and one on TCP (as a
// peer whose network blocks UDP), each send through their own allocation
// to the other's relayed address.
func TestRelayBetweenAllocations(t *testing.T) {
	udp, tcp := startServer(t)
	a, b := mustAllocate(t, udp, secret), mustAllocate(t, tcp, secret)
	if a.Addr() == b.Addr() || !a.Addr().IsValid() {
		t.Fatalf("relayed addresses %v and %v", a.Addr(), b.Addr())
	}
	if err := a.Permit(b.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := b.Permit(a.Addr()); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		msg := bytes.Repeat([]byte{byte(i)}, 100+i*50)
		send(t, a, b, msg)
		send(t, b, a, msg)
	}

	// pion bound a channel to b on its own; ChannelData framed by hand
	// on it reaches b as from a's relayed address.
	deadline := time.Now().Add(5 * time.Second)
	ch, ok := a.Channel(b.Addr())
	for ; !ok && time.Now().Before(deadline); ch, ok = a.Channel(b.Addr()) {
		send(t, a, b, []byte("bind"))
		time.Sleep(50 * time.Millisecond)
	}
	if !ok || ch < 0x4000 || a.UDPConn() == nil {
		t.Fatalf("no channel to %v (%d, %v), UDP socket %v", b.Addr(), ch, ok, a.UDPConn())
	}
	if b.UDPConn() != nil {
		t.Fatal("an allocation over TCP offers a UDP socket for ChannelData")
	}
	msg := []byte("framed by hand")
	frame := binary.BigEndian.AppendUint16(nil, ch)
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(msg)))
	if _, err := a.UDPConn().WriteToUDPAddrPort(append(frame, msg...), a.Server()); err != nil {
		t.Fatal(err)
	}
	expect(t, a, b, msg)
}

// send sends msg through pion (Send queues it for the allocation's own
// goroutine) and expects it at to.
func send(t *testing.T, from, to *Allocation, msg []byte) {
	t.Helper()
	if !from.Send(msg, to.Addr()) {
		t.Fatal("Send refused with an empty queue")
	}
	expect(t, from, to, msg)
}

// expect reads msg from `from` on `to`, skipping the "bind" packets that
// TestRelayBetweenAllocations sends while waiting for a channel.
func expect(t *testing.T, from, to *Allocation, msg []byte) {
	t.Helper()
	buf := make([]byte, 2048)
	got := make(chan error, 1)
	go func() {
		n, src, err := to.ReadFrom(buf)
		for err == nil && string(buf[:n]) == "bind" && string(msg) != "bind" {
			n, src, err = to.ReadFrom(buf)
		}
		switch {
		case err != nil:
			got <- err
		case src != from.Addr() || !bytes.Equal(buf[:n], msg):
			got <- &mismatch{}
		default:
			got <- nil
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("%d bytes from %v: %v", len(msg), from.Addr(), err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%d bytes from %v never arrived", len(msg), from.Addr())
	}
}

type mismatch struct{}

func (*mismatch) Error() string { return "wrong bytes or source" }

func TestWrongSecretSaysSo(t *testing.T) {
	udp, _ := startServer(t)
	user, pass := credentials(t, "not-the-secret")
	_, err := Allocate(context.Background(), Config{URI: udp, Username: user, Password: pass})
	if err == nil || !strings.Contains(err.Error(), "refused our credentials") || !strings.Contains(err.Error(), udp) {
		t.Fatalf("err = %v, want one naming the server and the credentials", err)
	}
}

func TestSilentServerTimesOut(t *testing.T) {
	pc, _ := net.ListenPacket("udp4", "127.0.0.1:0") // reads nothing
	defer pc.Close()
	user, pass := credentials(t, secret)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := Allocate(ctx, Config{URI: "turn:" + pc.LocalAddr().String(), Username: user, Password: pass})
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("err = %v after %v, want a failure within the context's second", err, time.Since(start))
	}
}
