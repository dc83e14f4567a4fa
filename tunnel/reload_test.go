package tunnel

import (
	"strings"
	"testing"

	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel/config"
)

// TestReloadRefusesLocalCandidates: the host's addresses, once offered to
// the peers, stay known to them; a reload that says LocalCandidates =
// false is refused with the key named, rather than taken and not done.
func TestReloadRefusesLocalCandidates(t *testing.T) {
	priv, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	parse := func(extra string) *config.Config { return testConfig(t, priv, extra) }
	old := parse("")
	if err := checkLive(old, parse("")); err != nil {
		t.Fatalf("the same config refused: %v", err)
	}
	err = checkLive(old, parse("LocalCandidates = false\n"))
	if err == nil || !strings.Contains(err.Error(), "LocalCandidates") {
		t.Fatalf("LocalCandidates changed on reload: %v, want an error naming the key", err)
	}
}

// testConfig is the config of an interface of key priv at 100.64.0.1/24,
// with extra after its [Interface] lines.
func testConfig(t *testing.T, priv key.Private, extra string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("punch0.conf", strings.NewReader("[Interface]\nPrivateKey = "+priv.Encode()+"\nAddress = 100.64.0.1/24\n"+extra))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
