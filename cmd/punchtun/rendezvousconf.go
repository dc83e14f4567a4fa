package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/punchtun/punchtun/rendezvous"
	"github.com/punchtun/punchtun/rendezvous/wire"
	"github.com/punchtun/punchtun/rendezvous/wire/cert"
	"github.com/punchtun/punchtun/tunnel/config"
)

// applyConfigFile sets the flags of fs from the [Rendezvous] section of
// the file at path, in the syntax of a peer's config. Every flag but
// --config is a key, named in CamelCase: --listen-tcp is ListenTCP,
// --key-file KeyFile. A flag given on the command line wins over the file,
// whose value for it is then not read. Keys of flags that may be repeated
// (--listen) may be repeated too, or take a comma-separated list. Errors
// name the file, the line and the key.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	onCommandLine := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	var keys []config.SectionKey
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		_, list := f.Value.(*stringList)
		keys = append(keys, config.SectionKey{Name: keyName(f.Name), List: list, Set: func(v string) error {
			if onCommandLine[f.Name] {
				return nil
			}
			if err := f.Value.Set(v); err != nil {
				// As the flag package words it for the command line.
				return fmt.Errorf("invalid value %q: %w", v, err)
			}
			return nil
		}})
	})
	file, err := os.Open(path)
	if err != nil {
		return err // *fs.PathError names the path
	}
	defer file.Close()
	return config.ParseSection(path, file, "Rendezvous", keys)
}

// keyName is the config file's name for a flag: listen-tcp is ListenTCP.
func keyName(flagName string) string {
	var b strings.Builder
	for part := range strings.SplitSeq(flagName, "-") {
		switch part {
		case "tcp", "udp", "ip", "turn", "ttl":
			b.WriteString(strings.ToUpper(part))
		default:
			if part != "" {
				b.WriteString(strings.ToUpper(part[:1]) + part[1:])
			}
		}
	}
	return b.String()
}

// turnConfig checks the TURN flags and reads the secret.
func turnConfig(uris []string, secretFile string, ttl time.Duration) (rendezvous.TURNConfig, error) {
	cfg := rendezvous.TURNConfig{URIs: uris, TTL: ttl}
	switch {
	case len(uris) == 0 && secretFile == "":
		return cfg, nil
	case len(uris) == 0:
		return cfg, errors.New("--turn-secret-file without --turn: name the TURN servers")
	case secretFile == "":
		return cfg, errors.New("--turn needs --turn-secret-file: the secret the TURN servers check credentials with (coturn's static-auth-secret)")
	case len(uris) > wire.MaxTURNURIs:
		return cfg, fmt.Errorf("--turn: at most %d servers", wire.MaxTURNURIs)
	case ttl < time.Minute:
		return cfg, fmt.Errorf("--turn-ttl %v: credentials must live a minute at least", ttl)
	}
	for _, u := range uris {
		if err := rendezvous.CheckTURNURI(u); err != nil {
			return cfg, fmt.Errorf("--turn %w", err)
		}
	}
	b, err := os.ReadFile(secretFile)
	if err != nil {
		return cfg, fmt.Errorf("--turn-secret-file: %w", err)
	}
	cfg.Secret = bytes.TrimSpace(b)
	if len(cfg.Secret) == 0 {
		return cfg, fmt.Errorf("--turn-secret-file %s: empty", secretFile)
	}
	return cfg, nil
}

// readNetworks reads --networks: network public keys, one per line; blank
// lines and # comments are skipped. Errors name the line.
func readNetworks(path string) ([]cert.NetworkKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []cert.NetworkKey
	for i, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		k, err := cert.ParseNetworkKey(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no network keys", path)
	}
	return out, nil
}
