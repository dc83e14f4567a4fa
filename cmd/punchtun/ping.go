package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/punchtun/punchtun/tunnel"
)

// pingResult is what `punchtun ping --json` prints.
type pingResult struct {
	Interface string             `json:"interface"`
	Peer      string             `json:"peer"`
	PublicKey string             `json:"public_key"`
	Sent      int                `json:"sent"`
	Received  int                `json:"received"`
	Replies   []tunnel.PingReply `json:"replies"`
}

func runPing(args []string) error {
	fs := newFlags("ping", "[flags] PEER", "Probe PEER (its Name, public key or virtual IP) over the tunnel's control path, on the\n"+
		"path the tunnel uses now, and print per pong the path it came by (direct, lan, relay, relay-tcp),\n"+
		"the endpoint and the round-trip time. Exits 1 if no pong came.")
	count := fs.Int("c", 5, "number of probes; 0 keeps probing until a pong comes over a direct or LAN path")
	interval := fs.Duration("interval", time.Second, "time between probes")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for each pong")
	iface := fs.String("interface", "", "the tunnel's interface (default: the running one that has PEER)")
	asJSON := fs.Bool("json", false, "print one JSON object with every reply")
	runDir := fs.String("run-dir", tunnel.RunDir(), "directory of the status sockets")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *count < 0 || *timeout <= 0 || *interval < 0 {
		return errors.New("-c, --timeout and --interval must not be negative")
	}
	peer := pos[0]
	ifaces := []string{*iface}
	if *iface == "" {
		if ifaces = tunnel.Running(*runDir); len(ifaces) == 0 {
			return errors.New("no punchtun interface is running")
		}
	}

	sum := pingResult{Peer: peer}
	for seq := 1; *count == 0 || seq <= *count; seq++ {
		if seq > 1 {
			time.Sleep(*interval)
		}
		r, name, err := pingOnce(*runDir, ifaces, peer, *timeout)
		if err != nil {
			return err
		}
		ifaces = []string{name} // the interface that has the peer, from now on
		sum.Interface, sum.Peer, sum.PublicKey = name, r.Peer, r.PublicKey
		sum.Sent++
		sum.Replies = append(sum.Replies, *r)
		if r.Error == "" {
			sum.Received++
		}
		if !*asJSON {
			if r.Error != "" {
				fmt.Printf("%s: %s\n", r.Peer, r.Error)
			} else {
				fmt.Printf("pong from %s via %s %s in %.2fms\n", r.Peer, r.Path, r.Endpoint, r.RTTMillis)
			}
		}
		if *count == 0 && r.Error == "" && (r.Path == "direct" || r.Path == "lan") {
			break
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(sum)
	} else {
		fmt.Printf("%d probes, %d pongs\n", sum.Sent, sum.Received)
	}
	if sum.Received == 0 {
		return errNoPong
	}
	return nil
}

// errNoPong exits 1 without another message: the replies said why.
var errNoPong = errors.New("no pong")

// pingOnce probes peer on the first of ifaces that has it.
func pingOnce(runDir string, ifaces []string, peer string, timeout time.Duration) (*tunnel.PingReply, string, error) {
	var unknown []string
	for _, name := range ifaces {
		r, err := tunnel.Ping(runDir, name, peer, timeout)
		if errors.Is(err, tunnel.ErrUnknownPeer) && len(ifaces) > 1 {
			unknown = append(unknown, name)
			continue
		}
		if err != nil {
			return nil, name, err
		}
		return r, name, nil
	}
	return nil, "", fmt.Errorf("no running interface has peer %q (%s)", peer, strings.Join(unknown, ", "))
}
