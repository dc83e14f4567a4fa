package nat

import (
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"
)

// TestCandidatesSkipTunnels puts an address on a TUN device (as another VPN
// would have) and checks it is no candidate: a path through it would carry
// the tunnel inside the other one.
func TestCandidatesSkipTunnels(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a TUN device")
	}
	const dev = "ptcand0"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	run("tuntap", "add", "mode", "tun", "name", dev)
	t.Cleanup(func() { exec.Command("ip", "link", "del", dev).Run() })
	run("addr", "add", "10.213.7.1/24", "dev", dev)
	run("link", "set", dev, "up")
	tunAddr := netip.MustParseAddrPort("10.213.7.1:51820")
	if slices.Contains(LocalCandidates(51820, "", nil), tunAddr) {
		t.Fatalf("a TUN device's address %v is a candidate", tunAddr)
	}
}
