package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

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
		case "tcp", "udp", "ip":
			b.WriteString(strings.ToUpper(part))
		default:
			if part != "" {
				b.WriteString(strings.ToUpper(part[:1]) + part[1:])
			}
		}
	}
	return b.String()
}
