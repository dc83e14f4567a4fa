package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/punchtun/punchtun/tunnel"
)

// punchtun status: the interface's state, as text or JSON.

func runStatus(args []string) error {
	fs := newFlags("status", "[flags] [IFACE]", "Show each peer of a running tunnel (of every running tunnel without IFACE).")
	asJSON := fs.Bool("json", false, "print one JSON object (needs IFACE when several tunnels run)")
	runDir := fs.String("run-dir", tunnel.RunDir(), "directory of the status sockets")
	pos, err := parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	ifaces := pos
	if len(ifaces) == 0 {
		ifaces = tunnel.Running(*runDir)
		if len(ifaces) == 0 {
			return errors.New("no punchtun interface is running")
		}
	}
	if *asJSON {
		if len(ifaces) > 1 {
			return fmt.Errorf("several interfaces run (%s): name one", strings.Join(ifaces, ", "))
		}
		st, err := tunnel.QueryStatus(*runDir, ifaces[0])
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	for i, name := range ifaces {
		st, err := tunnel.QueryStatus(*runDir, name)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Println()
		}
		printStatus(st)
	}
	return nil
}

func printStatus(st *tunnel.Status) {
	fmt.Printf("interface %s  public key %s  port %d  NAT %s  idle %.1f packets/min\n", st.Interface, st.PublicKey, st.ListenPort, cmp.Or(st.NAT, "-"), st.IdlePacketsPerMinute)
	printMode(st)
	printPortMapping(st.PortMapping)
	for _, r := range st.Rendezvous {
		state := "not registered"
		if r.Registered {
			state = "registered as " + r.Public
		}
		if r.TCP != "" {
			state += "  over TCP to " + r.TCP + " (" + r.TCPReason + ")"
		}
		fmt.Printf("rendezvous %s  %s\n", r.Address, state)
	}
	if n := st.Network; n != nil {
		refused := ""
		if n.Refused != "" {
			refused = "  REFUSED by the rendezvous: " + n.Refused
		}
		fmt.Printf("network %s  member %s  certificate valid until %s  %d members found%s\n", n.Key, n.Name, n.ValidUntil, n.Members, refused)
		if n.CertificateWarning != "" {
			fmt.Printf("WARNING: %s\n", n.CertificateWarning)
		}
		if n.StateWarning != "" {
			fmt.Printf("WARNING: %s\n", n.StateWarning)
		}
		if p := n.Policy; p != nil {
			fmt.Printf("policy seq %d  %d rules  %d flows  dropped %d (no rule)  %d keys revoked\n", p.Seq, len(p.Rules), p.Flows, p.Dropped["no-rule"], n.RevokedKeys)
		} else if n.RevokedKeys > 0 {
			fmt.Printf("no policy: members reach this one fully  %d keys revoked\n", n.RevokedKeys)
		}
	}
	if st.TURN != nil {
		fmt.Printf("turn %s  relayed as %s\n", st.TURN.Server, st.TURN.Relayed)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PEER\tPATH\tVIA\tENDPOINT\tRTT\tHANDSHAKE\tRX\tTX\tKEEPALIVE\tMTU\tREASON")
	for _, p := range st.Peers {
		name := p.Name
		if name == "" {
			name = p.PublicKey[:10] + "…"
		}
		keepalive, mtu := "-", "-"
		if p.KeepaliveSeconds > 0 {
			keepalive = fmt.Sprintf("%.0fs", p.KeepaliveSeconds)
		}
		if p.PathMTU > 0 {
			mtu = fmt.Sprintf("%d (path %d)", p.MTU, p.PathMTU)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, p.Path, orDash(p.Via), orDash(p.Endpoint), rtt(p.RTTMillis),
			ago(p.LastHandshake), byteCount(p.RxBytes), byteCount(p.TxBytes), keepalive, mtu, p.Reason)
	}
	w.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func rtt(ms float64) string {
	if ms == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fms", ms)
}

func ago(rfc3339 string) string {
	t, err := time.Parse(time.RFC3339, rfc3339)
	if err != nil {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func byteCount(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
