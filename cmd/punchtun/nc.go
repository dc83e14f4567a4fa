package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/punchtun/punchtun/tunnel"
	"github.com/punchtun/punchtun/tunnel/config"
)

// Userspace mode on the command line: up's flags, and `punchtun nc`.

// addUserspaceFlags adds up's --userspace, --socks5, --http-proxy and
// --forward, checked as they are parsed.
func addUserspaceFlags(fs *flag.FlagSet) *tunnel.UserspaceOptions {
	o := &tunnel.UserspaceOptions{}
	fs.BoolVar(&o.Enabled, "userspace", false, "run without root: no TUN, routes, DNS or hooks; the interface's addresses live in an\nin-process network stack, reached through the proxies, punchtun nc and --forward\n(as Userspace = true)")
	proxyFlag := func(dst *string) func(string) error {
		return func(v string) error { *dst = v; return config.CheckProxyAddr(v) }
	}
	fs.Func("socks5", "userspace mode: SOCKS5 proxy into the network at `ADDR`, or off (default "+tunnel.DefaultSOCKS5+");\nonly this flag may name an address beyond loopback", proxyFlag(&o.SOCKS5))
	fs.Func("http-proxy", "userspace mode: HTTP proxy into the network at `ADDR` (default off)", proxyFlag(&o.HTTPProxy))
	fs.Func("forward", "userspace mode: `PROTO:PORT=HOST:PORT`, e.g. tcp:22=127.0.0.1:22: peers reaching this interface's\naddress on PORT reach HOST:PORT here (repeatable; as Forward =)", func(v string) error {
		f, err := config.ParseForward(v)
		o.Forward = append(o.Forward, f)
		return err
	})
	return o
}

// printMode prints a userspace interface's proxies and forwards.
func printMode(st *tunnel.Status) {
	if st.Mode == "userspace" {
		fmt.Printf("mode userspace  socks5 %s  http-proxy %s  forwards %s\n", cmp.Or(st.SOCKS5, "off"), cmp.Or(st.HTTPProxy, "off"), cmp.Or(strings.Join(st.Forwards, ", "), "none"))
	}
}

func runNc(args []string) error {
	fs := newFlags("nc", "[flags] HOST PORT", "Join stdin and stdout to HOST:PORT through a running userspace interface, e.g.\n"+
		"ssh -o ProxyCommand='punchtun nc %h %p' bob.punch")
	iface := fs.String("interface", "", "the userspace interface to go through (default: the one running)")
	runDir := fs.String("run-dir", tunnel.RunDir(), "directory of the status sockets")
	pos, err := parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	port, err := strconv.ParseUint(pos[1], 10, 16)
	if err != nil || port == 0 {
		return fmt.Errorf("bad port %q", pos[1])
	}
	if *iface == "" {
		if *iface, err = userspaceInterface(*runDir); err != nil {
			return err
		}
	}
	c, err := tunnel.Dial(*runDir, *iface, pos[0], int(port))
	if err != nil {
		return err
	}
	return join(c, os.Stdin, os.Stdout)
}

// userspaceInterface is the one userspace interface running.
func userspaceInterface(runDir string) (string, error) {
	var found []string
	for _, name := range tunnel.Running(runDir) {
		if st, err := tunnel.QueryStatus(runDir, name); err == nil && st.Mode == "userspace" {
			found = append(found, name)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no userspace punchtun interface is running (status sockets in %s); start one with punchtun up --userspace FILE", runDir)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("several userspace interfaces run (%s): name one with --interface", strings.Join(found, ", "))
}

// join copies in to c and c to out until c's side ends; the end of in
// is passed on as a half close, so that the far side sees it.
func join(c net.Conn, in io.Reader, out io.Writer) error {
	defer c.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := io.Copy(c, in); err == nil {
			c.(*net.UnixConn).CloseWrite()
		}
	}()
	_, err := io.Copy(out, c)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
