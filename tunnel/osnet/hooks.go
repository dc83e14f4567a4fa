package osnet

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
)

// Hooks run as wg-quick runs them: each line of PreUp, PostUp, PreDown and
// PostDown through `bash -c`, in the order written, with %i replaced by
// the interface name, their output on punchtun's standard error (the
// journal, under systemd). PreUp runs before the interface exists, PostUp
// once it is up with its routes and DNS; PreDown before it goes, PostDown
// after. A failing PreUp or PostUp fails up, which undoes what it did, as
// wg-quick does; a failing PreDown or PostDown is logged and down goes on.

// RunHooks runs the lines of one hook (kind names it in logs and errors),
// stopping at the first that fails.
func RunHooks(log *slog.Logger, kind, iface string, lines []string) error {
	for _, line := range lines {
		cmd := strings.ReplaceAll(line, "%i", iface)
		log.Info("running hook", "hook", kind, "command", cmd)
		c := exec.Command("bash", "-c", cmd)
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		if err := c.Run(); err != nil {
			return fmt.Errorf("%s %q: %w", kind, cmd, err)
		}
	}
	return nil
}

// RunDownHooks runs a down hook, logging a failure: the interface goes
// anyway.
func RunDownHooks(log *slog.Logger, kind, iface string, lines []string) {
	if err := RunHooks(log, kind, iface, lines); err != nil {
		log.Warn("hook failed", "err", err)
	}
}
