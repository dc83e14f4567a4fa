package main

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel"
	"github.com/punchtun/punchtun/tunnel/policy"
)

// The network owner's policy tools: `network policy` signs a rules file,
// `network revoke` signs a revocation, both printing one line of text for
// `network publish` to hand a running member (or for Policy = in configs).

// seqFlag is --seq: a later signature wins, so it defaults to the Unix
// time of signing.
func seqFlag(fs *flag.FlagSet) *uint64 {
	return fs.Uint64("seq", uint64(time.Now().Unix()), "the document's sequence `number`: a policy of a higher one replaces one of a lower (default: now, in Unix seconds)")
}

// signingKey reads --key, which policy and revoke require.
func signingKey(file string) (cert.NetworkPrivate, error) {
	if file == "" {
		return cert.NetworkPrivate{}, errors.New("--key is required")
	}
	return readNetworkKey(file)
}

func runNetworkPolicy(args []string) error {
	fs := newFlags("network policy", "--key FILE [--seq N] RULES",
		"Print the policy of the rules file RULES, signed by the network key, as one line of text.\n"+
			"RULES holds [Rule] sections of From, To (*, group:NAME, name:NAME, an address or prefix)\n"+
			"and Allow (any, icmp, tcp, udp, tcp/22, udp/53, tcp/8000-8100): what no rule allows, members drop.")
	keyFile := fs.String("key", "", "`file` holding the network private key")
	seq := seqFlag(fs)
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	rules, err := policy.LoadRules(pos[0])
	if err != nil {
		return err
	}
	nk, err := signingKey(*keyFile)
	if err != nil {
		return err
	}
	d, err := cert.SignPolicy(nk, *seq, rules)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	fmt.Println(d.Text())
	return nil
}

func runNetworkRevoke(args []string) error {
	fs := newFlags("network revoke", "--key FILE [--seq N] MEMBERKEY...",
		"Print a revocation of the members' WireGuard public keys, signed by the network key, as one\n"+
			"line of text. Every member then refuses those keys, whatever certificate they show.")
	keyFile := fs.String("key", "", "`file` holding the network private key")
	seq := seqFlag(fs)
	pos, err := parse(fs, args, 1, cert.MaxRevoked)
	if err != nil {
		return err
	}
	keys := make([]key.Key, len(pos))
	for i, s := range pos {
		if keys[i], err = key.Parse(s); err != nil {
			return fmt.Errorf("MEMBERKEY %d: %w", i+1, err)
		}
	}
	nk, err := signingKey(*keyFile)
	if err != nil {
		return err
	}
	d, err := cert.SignRevocation(nk, *seq, keys)
	if err != nil {
		return err
	}
	fmt.Println(d.Text())
	return nil
}

func runNetworkPublish(args []string) error {
	fs := newFlags("network publish", "[flags] IFACE FILE",
		"Hand the signed policy or revocation in FILE (from network policy or revoke) to the running\n"+
			"interface IFACE: it verifies it, applies it, keeps it and sends it to the rendezvous and the\n"+
			"members it talks to. An older policy than the one held changes nothing and exits 1.")
	runDir := fs.String("run-dir", tunnel.DefaultRunDir, "directory of the status sockets")
	pos, err := parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	doc, ok, err := readDocument(pos[1])
	switch {
	case !ok:
		return fmt.Errorf("%s: not a policy or revocation (a certificate goes in the config)", pos[1])
	case err != nil:
		return err
	}
	if err := tunnel.Publish(*runDir, pos[0], doc.Bytes()); err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	fmt.Printf("%s %d published on %s\n", doc.KindName(), doc.Seq, pos[0])
	return nil
}

// readDocument reads a policy or revocation: a file of its text, or the
// text. ok is false when arg holds something else (a certificate).
func readDocument(arg string) (doc *cert.Document, ok bool, err error) {
	text, _ := argText(arg)
	raw, derr := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(text))
	if derr != nil || len(raw) == 0 || raw[0] != cert.KindPolicy && raw[0] != cert.KindRevocation {
		return nil, false, nil
	}
	doc, err = cert.ParseDocument(raw) // decoded once, here
	return doc, true, err
}

// showDocument prints a document's fields; with network, an error unless
// that network signed it.
func showDocument(d *cert.Document, network string) error {
	fmt.Printf("%-12s %s\n", "kind:", d.KindName())
	fmt.Printf("%-12s %s\n", "seq:", strconv.FormatUint(d.Seq, 10))
	fmt.Printf("%-12s %s\n", "network key:", d.Network)
	if d.Kind == cert.KindPolicy {
		if len(d.Rules) == 0 {
			fmt.Println("rules:       none: members take nothing from each other")
		}
		for i, r := range d.Rules {
			fmt.Printf("rule %d:      %s\n", i+1, r)
		}
	}
	for _, k := range d.Revoked {
		fmt.Printf("%-12s %s\n", "revoked:", k)
	}
	if network != "" {
		nk, err := cert.ParseNetworkKey(network)
		if err != nil {
			return fmt.Errorf("--network: %w", err)
		}
		if d.Network != nk {
			return &cert.Error{Reason: cert.OtherNetwork, What: d.KindName(), Detail: "signed by network " + d.Network.String()}
		}
		fmt.Println("verified:    signed by that network")
	}
	return nil
}
