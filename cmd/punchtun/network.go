package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
)

// networkCommands are `punchtun network`'s subcommands: the network
// owner's tools. They touch no network and need no root: the network key
// stays on the machine (ideally offline) where the owner runs them.
var networkCommands = []command{
	{"new", "", "print a new network private key (Ed25519, base64)", runNetworkNew},
	{"pub", "< NETWORK-KEY", "read a network private key on stdin, print the network's public key", runNetworkPub},
	{"sign", "--key FILE --name NAME --address CIDR... [--group G]... [--valid D] MEMBERKEY", "print a certificate for a member's WireGuard public key", runNetworkSign},
	{"policy", "--key FILE [--seq N] RULES", "print the policy of a rules file, signed", runNetworkPolicy},
	{"revoke", "--key FILE [--seq N] [--cert CERT]... [--from FILE] [MEMBERKEY...]", "print a signed revocation of members' keys or certificates", runNetworkRevoke},
	{"publish", "IFACE FILE", "hand a signed policy or revocation to a running interface, which applies it and sends it on", runNetworkPublish},
	{"show", "[--network NETPUB] FILE", "print a certificate's, policy's or revocation's fields; with --network, exit 1 unless it is that network's (and a certificate valid now)", runNetworkShow},
}

func runNetwork(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := io.Writer(os.Stdout)
		if len(args) == 0 {
			w = os.Stderr
		}
		fmt.Fprintf(w, "Usage:\n")
		for _, c := range networkCommands {
			fmt.Fprintf(w, "  punchtun network %-7s %s\n      %s\n", c.name, c.args, c.summary)
		}
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range networkCommands {
		if c.name == args[0] {
			return c.run(args[1:])
		}
	}
	return fmt.Errorf("unknown subcommand %q (want new, pub, sign, policy, revoke, publish or show)", args[0])
}

func runNetworkNew(args []string) error {
	fs := newFlags("network new", "", "Print a new network private key. Keep it offline: whoever holds it can add members.")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	k, err := cert.NewNetworkPrivate()
	if err != nil {
		return err
	}
	fmt.Println(k.Encode())
	return nil
}

func runNetworkPub(args []string) error {
	fs := newFlags("network pub", "< NETWORK-KEY", "Read a network private key on stdin and print the network's public key (for Network = in configs).")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	line, err := stdinLine()
	if err != nil {
		return err
	}
	k, err := cert.ParseNetworkPrivate(line)
	if err != nil {
		return err
	}
	fmt.Println(k.Public())
	return nil
}

func runNetworkSign(args []string) error {
	fs := newFlags("network sign", "--key FILE --name NAME --address CIDR [--address CIDR]... [--group GROUP]... [--valid DURATION] MEMBERKEY",
		"Print a certificate, one line, for the member whose WireGuard public key is MEMBERKEY.")
	keyFile := fs.String("key", "", "`file` holding the network private key (from punchtun network new)")
	name := fs.String("name", "", "the member's `name`, a DNS label (a-z, 0-9, '-'): <name>.<Domain> resolves to it")
	var addrs, groups stringList
	fs.Var(&addrs, "address", "the member's `address` with the network's prefix length, e.g. 100.64.0.7/24 (repeatable, IPv4 and IPv6)")
	fs.Var(&groups, "group", "a `group` the member belongs to, for policy rules (repeatable)")
	valid := fs.String("valid", "1y", "how long the certificate is valid from now: a Go duration (720h) or days and years (90d, 1y)")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *keyFile == "" || *name == "" || len(addrs) == 0 {
		return errors.New("--key, --name and at least one --address are required")
	}
	nk, err := readNetworkKey(*keyFile)
	if err != nil {
		return err
	}
	member, err := key.Parse(pos[0])
	if err != nil {
		return fmt.Errorf("MEMBERKEY: %w", err)
	}
	d, err := parseValidity(*valid)
	if err != nil {
		return fmt.Errorf("--valid: %w", err)
	}
	tpl := cert.Template{Member: member, Name: *name, Groups: groups, NotBefore: time.Now(), NotAfter: time.Now().Add(d)}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return fmt.Errorf("--address %q: want an address with the network's prefix length, e.g. 100.64.0.7/24", a)
		}
		tpl.Addresses = append(tpl.Addresses, p)
	}
	c, err := cert.Sign(nk, tpl)
	if err != nil {
		return err
	}
	fmt.Println(c.Text())
	waitOutSecond(c.NotBefore)
	return nil
}

// waitOutSecond returns once the clock has left the second of notBefore.
// A certificate's not-before counts whole seconds, and of two of one key
// only the later not-before supersedes the other: re-signed in the same
// second (a script that signs a member, then signs it again with a group
// fewer), the two would be equals, and the member could go on presenting
// the first. Waiting here makes every sign on this machine start a second
// later than the one before.
func waitOutSecond(notBefore time.Time) {
	time.Sleep(time.Until(notBefore.Truncate(time.Second).Add(time.Second)))
}

// readNetworkKey reads the network private key file, warning (as wg does
// for its keys) when others may read it.
func readNetworkKey(path string) (cert.NetworkPrivate, error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(os.Stderr, "Warning: `%s' is world accessible, and it holds the network's private key\n", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cert.NetworkPrivate{}, err
	}
	k, err := cert.ParseNetworkPrivate(strings.TrimSpace(string(b)))
	if err != nil {
		return cert.NetworkPrivate{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// parseValidity parses --valid: Go's durations, and whole days (d) and
// years of 365 days (y), since certificates live for months.
func parseValidity(s string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, fmt.Errorf("%q: want a number of days before d", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else if n, ok := strings.CutSuffix(s, "y"); ok {
		years, err := strconv.Atoi(n)
		if err != nil {
			return 0, fmt.Errorf("%q: want a number of years before y", s)
		}
		d = time.Duration(years) * 365 * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, err
		}
	}
	if d <= 0 || d > 100*365*24*time.Hour {
		return 0, fmt.Errorf("%q: must be more than 0 and at most 100y", s)
	}
	return d, nil
}

func runNetworkShow(args []string) error {
	fs := newFlags("network show", "[--network NETPUB] FILE",
		"Print a certificate's, a policy's or a revocation's fields. FILE holds its text, or is the text.\n"+
			"With --network, exit 1 with the reason unless it is signed by that network (and a certificate\n"+
			"valid now).")
	network := fs.String("network", "", "the network's public `key` (from punchtun network pub)")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if _, ok, _ := readDocument(firstLine(pos[0])); ok {
		docs, err := readDocuments(pos[0])
		if err != nil {
			return err
		}
		for i, doc := range docs {
			if i > 0 {
				fmt.Println()
			}
			if err := showDocument(doc, *network); err != nil {
				return err
			}
		}
		return nil
	}
	c, err := readCert(pos[0])
	if err != nil {
		return err
	}
	fmt.Print(describe(c))
	if *network != "" {
		nk, err := cert.ParseNetworkKey(*network)
		if err != nil {
			return fmt.Errorf("--network: %w", err)
		}
		if err := c.Check(nk, time.Now()); err != nil {
			return err
		}
		fmt.Println("verified:    signed by that network, valid now")
	}
	return nil
}

// firstLine is the first line of what arg holds that is not blank.
func firstLine(arg string) string {
	text, _ := argText(arg)
	for line := range strings.SplitSeq(text, "\n") {
		if strings.TrimSpace(line) != "" {
			return line
		}
	}
	return ""
}

// readCert reads CERT: a file holding a certificate, or its text.
func readCert(arg string) (*cert.Cert, error) {
	text, ferr := argText(arg)
	c, err := cert.ParseText(text)
	if err != nil && ferr != nil && len(arg) < 100 {
		return nil, ferr // too short for a certificate: the file was meant
	}
	return c, err
}

// argText is what an argument that names a file or holds its text
// holds: the file's contents, or the argument itself when it names no
// file it can read (ferr says why).
func argText(arg string) (text string, ferr error) {
	b, ferr := os.ReadFile(arg)
	if ferr != nil {
		return arg, ferr
	}
	return string(b), nil
}

// describe prints a certificate's fields, one per line.
func describe(c *cert.Cert) string {
	var b strings.Builder
	addrs := make([]string, len(c.Addresses))
	for i, p := range c.Addresses {
		addrs[i] = p.String()
	}
	groups := strings.Join(c.Groups, ", ")
	if groups == "" {
		groups = "(none)"
	}
	fmt.Fprintf(&b, "name:        %s\n", c.Name)
	fmt.Fprintf(&b, "addresses:   %s\n", strings.Join(addrs, ", "))
	fmt.Fprintf(&b, "groups:      %s\n", groups)
	fmt.Fprintf(&b, "member key:  %s\n", c.Member)
	fmt.Fprintf(&b, "network key: %s\n", c.Network)
	fmt.Fprintf(&b, "valid from:  %s\n", c.NotBefore.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "valid until: %s\n", c.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "fingerprint: %s\n", c.Fingerprint())
	return b.String()
}
