package main

import (
	"os"

	"github.com/punchtun/punchtun/tunnel"
)

// runSyncConf is `punchtun syncconf IFACE [FILE]`: as `wg syncconf`, the
// running interface takes the config's changes without dropping the
// tunnels that did not change. FILE is read here, so errors name it as
// given; without FILE the interface reads the file it came up from.
func runSyncConf(args []string) error {
	fs := newFlags("syncconf", "[flags] IFACE [FILE]", "Apply FILE (default: the file IFACE was brought up from) to the running IFACE:\n"+
		"peers added, removed or changed, rendezvous, addresses and MTU. Unchanged peers keep their\n"+
		"sessions and paths. A file with an error, or a change that needs a restart, changes nothing.\n"+
		"SIGHUP to `punchtun up` does the same with its own file.")
	runDir := fs.String("run-dir", tunnel.RunDir(), "directory of the status sockets")
	pos, err := parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	var file string
	var contents []byte
	if len(pos) == 2 {
		file = pos[1]
		if contents, err = os.ReadFile(file); err != nil {
			return err
		}
	}
	return tunnel.SyncConf(*runDir, pos[0], file, contents)
}
