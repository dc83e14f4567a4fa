package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/punchtun/punchtun/nat"
)

func runNetcheck(args []string) error {
	fs := newFlags("netcheck", "--rendezvous HOST:PORT [flags]",
		"Probe this network: is UDP usable, the public IPv4/IPv6 endpoint, whether the NAT\n"+
			"maps per destination (hard) or not (easy), whether it kept the port, and which port\n"+
			"mapping protocols (NAT-PMP, PCP, UPnP IGD) the default gateway answers.\n"+
			"Any STUN server works; a rendezvous that listens on two addresses, or two\n"+
			"--rendezvous flags, let the NAT's mapping behaviour be told.")
	var servers stringList
	fs.Var(&servers, "rendezvous", "rendezvous or STUN server HOST:PORT; may be given more than once")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if len(servers) == 0 {
		fs.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var addrs []netip.AddrPort
	for _, s := range servers {
		ap, err := nat.Resolve(ctx, s)
		if err != nil {
			return fmt.Errorf("--rendezvous %s: %w", s, err)
		}
		addrs = append(addrs, ap)
	}
	r, err := nat.Netcheck(ctx, addrs)
	if err != nil {
		return err
	}
	pm := checkPortMapping(ctx)
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*nat.Report
			PortMapping portMappingCheck `json:"port_mapping"`
		}{r, pm})
	}
	defer pm.print()
	yes := map[bool]string{true: "yes", false: "no"}
	fmt.Printf("UDP:            %s\n", yes[r.UDP])
	if !r.UDP {
		fmt.Printf("Mapping:        %s (%s; punchtun will relay over TCP)\n", r.Mapping, r.Mapping.Meaning())
		return nil
	}
	fmt.Printf("Public IPv4:    %s\n", orNone(r.Public))
	fmt.Printf("Public IPv6:    %s\n", orNone(r.PublicIPv6))
	fmt.Printf("Mapping:        %s (%s)\n", r.Mapping, r.Mapping.Meaning())
	fmt.Printf("Port preserved: %s (local port %d)\n", yes[r.PortPreserved], r.LocalPort)
	for _, o := range r.Seen {
		fmt.Printf("  %-24s saw us as %s\n", o.Server, o.Mapped)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
