// Command punchtun connects machines behind NAT routers with WireGuard.
//
//	punchtun genkey                      print a new private key
//	punchtun pubkey < key                print the public key of a private key
//	punchtun rendezvous [flags]          run the rendezvous on a public host
//	punchtun up [flags] FILE             bring up the tunnel FILE describes
//	punchtun syncconf IFACE [FILE]       apply a changed config to a running tunnel
//	punchtun status [flags] [IFACE]      show the peers of running tunnels
//	punchtun netcheck --rendezvous ADDR  probe this network's NAT
//	punchtun ping [flags] PEER           probe a peer: path taken and RTT
//	punchtun nc [flags] HOST PORT        stdin/stdout to HOST:PORT through a userspace interface
//	punchtun network new|pub|sign|policy|revoke|publish|show   a network's keys, certificates, policy and revocations
//
// The work is done in package tunnel (the peer), rendezvous (the server) and
// nat (STUN, candidates, hole punching); this file only parses the command line.
package main

import (
	"encoding"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

type command struct {
	name, args, summary string
	run                 func(args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"genkey", "", "print a new base64 private key (as wg genkey)", runGenkey},
		{"pubkey", "", "read a private key on stdin, print its public key (as wg pubkey)", runPubkey},
		{"rendezvous", "[flags]", "run the rendezvous server on a public host", runRendezvous},
		{"up", "[flags] FILE", "bring up the tunnel described by FILE; runs until SIGINT or SIGTERM", runUp},
		{"syncconf", "IFACE [FILE]", "apply a changed config to a running tunnel without dropping it (as wg syncconf)", runSyncConf},
		{"status", "[flags] [IFACE]", "show each peer's path, endpoint, RTT, handshake and transfer", runStatus},
		{"netcheck", "[flags]", "probe this network's UDP, public address and NAT mapping", runNetcheck},
		{"network", "SUBCOMMAND", "the network owner's tools: new, pub, sign, policy, revoke, publish and show (run without one for help)", runNetwork},
		{"ping", "[flags] PEER", "probe a peer over the tunnel's control path: path taken and RTT per pong", runPing},
		{"nc", "[flags] HOST PORT", "join stdin/stdout to HOST:PORT through a userspace interface (ssh ProxyCommand)", runNc},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "punchtun connects machines behind NAT routers with WireGuard.\n\nUsage:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  punchtun %-10s %-16s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'punchtun COMMAND --help' for a command's flags.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage(os.Stdout)
		return
	}
	for _, c := range commands {
		if c.name == name {
			err := c.run(os.Args[2:])
			switch {
			case err == nil:
				return
			case errors.Is(err, flag.ErrHelp):
				return
			case errors.Is(err, errUsage):
				os.Exit(2)
			}
			fmt.Fprintf(os.Stderr, "punchtun %s: %v\n", name, err)
			os.Exit(1)
		}
	}
	fmt.Fprintf(os.Stderr, "punchtun: unknown command %q\n\n", name)
	usage(os.Stderr)
	os.Exit(2)
}

// errUsage is returned after the flag set has printed what was wrong.
var errUsage = errors.New("usage")

// newFlags returns a flag set whose usage message names the command.
func newFlags(name, args, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: punchtun %s %s\n\n%s\n", name, args, summary)
		var hasFlags bool
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parse parses flags that may stand before or after the positional
// arguments (`up punch0.conf --interface wg1`), and returns the positional
// ones. It checks their count against min and max.
func parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < min || len(pos) > max {
		fs.Usage()
		return nil, errUsage
	}
	return pos, nil
}

// levelFlag is a log level given on the command line.
type levelFlag struct{ slog.Level }

func (l *levelFlag) Set(s string) error { return l.UnmarshalText([]byte(s)) }

// formatFlag is a log format given on the command line: text, slog's
// key=value lines for people, or json, one object per line for log
// collectors.
type formatFlag string

func (f *formatFlag) String() string { return string(*f) }

func (f *formatFlag) Set(s string) error {
	if s != "text" && s != "json" {
		return errors.New("want text or json")
	}
	*f = formatFlag(s)
	return nil
}

// logFlags are the --log-level and --log-format of every command that logs.
type logFlags struct {
	level  levelFlag
	format formatFlag
}

func addLogFlags(fs *flag.FlagSet) *logFlags {
	l := &logFlags{level: levelFlag{slog.LevelInfo}, format: "text"}
	fs.Var(&l.level, "log-level", "log level: debug, info, warn or error")
	fs.Var(&l.format, "log-format", "log `format`: text (key=value) or json (one object per line)")
	return l
}

// logger returns the logger the flags ask for. It writes to stderr, which
// systemd's journal collects.
func (l *logFlags) logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.level.Level}
	if l.format == "json" {
		opts.ReplaceAttr = stringers
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// stringers logs a value that has a String method but no JSON or text
// encoding, such as a *net.UDPAddr, as its string, as the text handler
// does, rather than as the JSON of its struct fields.
func stringers(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindAny {
		return a
	}
	switch v := a.Value.Any().(type) {
	case json.Marshaler, encoding.TextMarshaler, error:
	case fmt.Stringer:
		a.Value = slog.StringValue(v.String())
	}
	return a
}

// stringList is a flag that may be given more than once.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
