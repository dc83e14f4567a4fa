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
	future := fs.Bool("future", false, "sign a --seq more than a year ahead of now all the same")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if err := checkFutureSeq(*seq, *future, time.Now()); err != nil {
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

// maxSeqAhead is how far ahead of now, read as Unix seconds, a policy's
// seq may be without --future: a policy of seq 2^64-1, or one signed on a
// machine whose clock is years fast, could never be replaced by one signed
// at the time (the default seq).
const maxSeqAhead = 365 * 24 * time.Hour

func checkFutureSeq(seq uint64, future bool, now time.Time) error {
	if limit := uint64(now.Add(maxSeqAhead).Unix()); seq > limit && !future {
		return fmt.Errorf("--seq %d is more than a year ahead of now (%d in Unix seconds): no policy signed later "+
			"with the default seq could replace it; give --future to sign it all the same", seq, now.Unix())
	}
	return nil
}

func runNetworkRevoke(args []string) error {
	fs := newFlags("network revoke", "--key FILE [--seq N] [--cert CERT]... [--from FILE] [MEMBERKEY...]",
		"Print a revocation, signed by the network key, as lines of text (one document each; more than\n"+
			"one only when it does not fit one). Every member then refuses the keys MEMBERKEY, whatever\n"+
			"certificate they show, and the certificates CERT (a file or its text), retired by fingerprint:\n"+
			"a member re-signed without a group, or whose address moved, keeps its key but not its old\n"+
			"certificate. Revocations add up: none undoes another. --from FILE (earlier revocations, one a\n"+
			"line) signs one list of everything they and this one name, which replaces them on every holder.")
	keyFile := fs.String("key", "", "`file` holding the network private key")
	seq := seqFlag(fs)
	var certs stringList
	fs.Var(&certs, "cert", "a `CERT` to retire (a file or its text); may be given more than once")
	from := fs.String("from", "", "`file` of earlier revocations to list again with this one")
	pos, err := parse(fs, args, 0, 1<<16)
	if err != nil {
		return err
	}
	nk, err := signingKey(*keyFile)
	if err != nil {
		return err
	}
	keys := make([]key.Key, len(pos))
	for i, s := range pos {
		if keys[i], err = key.Parse(s); err != nil {
			return fmt.Errorf("MEMBERKEY %d: %w", i+1, err)
		}
	}
	var retired []cert.RetiredCert
	for _, arg := range certs {
		c, err := readCert(arg)
		if err != nil {
			return fmt.Errorf("--cert %s: %w", arg, err)
		}
		if c.Network != nk.Public() {
			return fmt.Errorf("--cert %s: signed by network %s, not by --key's", arg, c.Network)
		}
		retired = append(retired, cert.RetiredOf(c))
	}
	if *from != "" {
		earlier, err := revocationsFrom(*from, nk.Public(), *seq)
		if err != nil {
			return err
		}
		for _, d := range earlier {
			keys = append(keys, d.Revoked...)
			for _, c := range d.Retired {
				if time.Now().Before(c.NotAfter) {
					retired = append(retired, c)
				}
			}
		}
	}
	if len(keys)+len(retired) == 0 {
		return errors.New("name a MEMBERKEY or a --cert to revoke")
	}
	docs, err := cert.SignRevocations(nk, *seq, keys, retired)
	if err != nil {
		return err
	}
	for _, d := range docs {
		fmt.Println(d.Text())
	}
	return nil
}

// revocationsFrom reads the revocations of network in file (policies and
// blank lines are passed over); seq must rank above them all, so that the
// list signed from them replaces them.
func revocationsFrom(file string, network cert.NetworkKey, seq uint64) ([]*cert.Document, error) {
	docs, err := readDocuments(file)
	if err != nil {
		return nil, fmt.Errorf("--from %s: %w", file, err)
	}
	var out []*cert.Document
	for _, d := range docs {
		if d.Kind != cert.KindRevocation {
			continue
		}
		if d.Network != network {
			return nil, fmt.Errorf("--from %s: a revocation of network %s, not --key's", file, d.Network)
		}
		if d.Seq >= seq {
			return nil, fmt.Errorf("--from %s: a revocation of seq %d: --seq must be higher for the list to replace it", file, d.Seq)
		}
		out = append(out, d)
	}
	return out, nil
}

func runNetworkPublish(args []string) error {
	fs := newFlags("network publish", "[flags] IFACE FILE",
		"Hand the signed policy or revocation in FILE (from network policy or revoke) to the running\n"+
			"interface IFACE: it verifies it, applies it, keeps it and sends it to the rendezvous and the\n"+
			"members it talks to. An older policy than the one held changes nothing and exits 1.")
	runDir := fs.String("run-dir", tunnel.RunDir(), "directory of the status sockets")
	pos, err := parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	docs, err := readDocuments(pos[1])
	if err != nil {
		return err
	}
	for _, doc := range docs {
		if err := tunnel.Publish(*runDir, pos[0], doc.Bytes()); err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		fmt.Printf("%s %d published on %s\n", doc.KindName(), doc.Seq, pos[0])
	}
	return nil
}

// readDocuments reads the policies and revocations of arg (a file of
// their text, one a line, or the text), naming the line of an error.
func readDocuments(arg string) ([]*cert.Document, error) {
	text, _ := argText(arg)
	var docs []*cert.Document
	for i, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		doc, ok, err := readDocument(line)
		switch {
		case !ok:
			return nil, fmt.Errorf("%s:%d: not a policy or revocation (a certificate goes in the config)", arg, i+1)
		case err != nil:
			return nil, fmt.Errorf("%s:%d: %w", arg, i+1, err)
		}
		docs = append(docs, doc)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: holds no policy or revocation", arg)
	}
	return docs, nil
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
	for _, c := range d.Retired {
		fmt.Printf("%-12s %x (valid until %s)\n", "retired:", c.Fingerprint, c.NotAfter.UTC().Format(time.RFC3339))
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
