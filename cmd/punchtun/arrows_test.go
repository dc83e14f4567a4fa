package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPackageArrows keeps the package graph pointing one way: the protocol
// (rendezvous/wire, with keys and state files) is what both sides share;
// nat depends on nothing of this module; the peer (tunnel) never imports
// the rendezvous server, and the rendezvous never imports the peer.
func TestPackageArrows(t *testing.T) {
	const mod = "github.com/punchtun/punchtun/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], mod)
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			imp = strings.TrimPrefix(imp, mod)
			under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
			switch {
			case under(pkg, "nat"):
				t.Errorf("nat imports %s: it must depend on nothing of this module", imp)
			case under(pkg, "tunnel") && imp == "rendezvous":
				t.Errorf("%s imports the rendezvous server", pkg)
			case under(pkg, "rendezvous") && under(imp, "tunnel"):
				t.Errorf("%s imports the peer's %s", pkg, imp)
			}
		}
	}
}
