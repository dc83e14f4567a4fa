package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/punchtun/punchtun/rendezvous"
	"github.com/punchtun/punchtun/rendezvous/wire/key"
	"github.com/punchtun/punchtun/tunnel"
	"github.com/punchtun/punchtun/tunnel/bind"
	"github.com/punchtun/punchtun/tunnel/config"
)

func runGenkey(args []string) error {
	fs := newFlags("genkey", "", "Print a new base64 Curve25519 private key, as `wg genkey` does.")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	k, err := key.NewPrivate()
	if err != nil {
		return err
	}
	fmt.Println(k.Encode())
	return nil
}

func runPubkey(args []string) error {
	fs := newFlags("pubkey", "< PRIVATE-KEY", "Read a base64 private key on stdin and print its public key, as `wg pubkey` does.")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	line, err := stdinLine()
	if err != nil {
		return err
	}
	k, err := key.ParsePrivate(line)
	if err != nil {
		return err
	}
	fmt.Println(k.Public())
	return nil
}

// stdinLine reads the key that pubkey and network pub are given on stdin.
func stdinLine() (string, error) {
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", errors.New("no key on standard input")
	}
	return strings.TrimSpace(line), nil
}

func runRendezvous(args []string) error {
	fs := newFlags("rendezvous", "[flags]", "Run the rendezvous: a STUN server that also introduces peers to each other.")
	var listen stringList
	fs.Var(&listen, "listen", "UDP address to listen on; may be given more than once (default 0.0.0.0:3478)")
	var listenTCP stringList
	fs.Var(&listenTCP, "listen-tcp", "TCP address for peers whose network blocks UDP (they try the rendezvous's port, then 443);\nmay be given more than once; 'off' for none (default: the --listen addresses)")
	keyFile := fs.String("key-file", "/var/lib/punchtun/rendezvous.key", "private key file; created (mode 0600) if missing")
	stateFile := fs.String("state-file", "", "where registrations are kept across restarts, so peers need not register again;\n'-' for nowhere (default: rendezvous.state next to the key file)")
	relay := fs.Bool("relay", true, "relay WireGuard packets between peers that cannot reach each other directly")
	var turnURIs stringList
	fs.Var(&turnURIs, "turn", "TURN server for relayed pairs (turn:host:port, turn:host:port?transport=tcp, turns:host:443);\nmay be given more than once; peers get credentials for them from --turn-secret-file")
	turnSecretFile := fs.String("turn-secret-file", "", "file holding the TURN servers' shared secret (coturn's static-auth-secret)")
	turnTTL := fs.Duration("turn-ttl", rendezvous.DefaultTURNTTL, "how long the TURN credentials handed to peers stay valid")
	alternate := fs.Bool("alternate-port", true, "with a single --listen, listen on the next port too, as STUN's alternate address:\nwithout a second address peers cannot tell easy NATs from hard ones")
	networksFile := fs.String("networks", "", "serve only the members of the networks whose public keys this `file` lists, one per line\n(# comments); default: members of any network")
	limits := addLimitFlags(fs)
	metricsAddr := addMetricsFlag(fs, "127.0.0.1:9090")
	logf := addLogFlags(fs)
	configFile := fs.String("config", "", "read flags from this file's [Rendezvous] section (keys: Listen, ListenTCP, KeyFile, …);\nflags on the command line win")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *configFile != "" {
		if err := applyConfigFile(fs, *configFile); err != nil {
			return err
		}
	}
	if len(listen) == 0 {
		listen = stringList{"0.0.0.0:3478"}
	}
	log := logf.logger()
	metrics, err := listenMetrics(*metricsAddr)
	if err != nil {
		return err
	}
	defer metrics.close()
	priv, err := loadOrCreateKey(*keyFile)
	if err != nil {
		return err
	}
	rcfg := rendezvous.Config{PrivateKey: priv, Relay: *relay, Logger: log}
	if rcfg.TURN, err = turnConfig(turnURIs, *turnSecretFile, *turnTTL); err != nil {
		return err
	}
	limits(&rcfg)
	if *networksFile != "" {
		if rcfg.Networks, err = readNetworks(*networksFile); err != nil {
			return err
		}
		log.Info("serving the members of listed networks only", "file", *networksFile, "networks", len(rcfg.Networks))
	}
	srv := rendezvous.NewServer(rcfg)
	defer srv.Close()
	onStatsSignal(func() { srv.LogStats(log) })
	metrics.serve(log, rendezvous.NewCollector(srv))
	var conns []*net.UDPConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, addr := range listen {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return fmt.Errorf("--listen %s: %w", addr, err)
		}
		c, err := net.ListenUDP("udp", ua)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	if len(conns) == 1 && *alternate {
		// One address is what a user types first; a second tells easy
		// NATs from hard ones. Take the next port, as coturn does for
		// its alternate port, if it is free.
		if c, err := listenAlternate(conns[0]); err != nil {
			log.Warn("cannot listen on the next port for STUN's alternate address", "err", err)
		} else {
			log.Info("listening on the next port too, for STUN's alternate address: open it to UDP as well", "addr", c.LocalAddr())
			conns = append(conns, c)
		}
	}
	if *stateFile == "" {
		*stateFile = filepath.Join(filepath.Dir(*keyFile), "rendezvous.state")
	}
	if *stateFile != "-" {
		n, err := srv.Load(*stateFile, conns)
		if err != nil {
			log.Warn("ignoring unreadable state file", "file", *stateFile, "err", err)
		} else if n > 0 {
			log.Info("registrations restored", "file", *stateFile, "peers", n)
		}
		defer saveRendezvousState(log, srv, *stateFile)
		go func() {
			// A second after a change, or ten times as long as the last
			// save took, whichever is later: a crash loses little, and a
			// table of 100k peers is not written out every second.
			var last time.Time
			var took time.Duration
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for now := range t.C {
				if srv.Dirty() && now.Sub(last) >= 10*took {
					last = now
					saveRendezvousState(log, srv, *stateFile)
					took = time.Since(now)
				}
			}
		}()
	}
	if len(listenTCP) == 0 {
		listenTCP = listen
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, addr := range listenTCP {
		if addr == "off" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--listen-tcp %s: %w", addr, err)
		}
		lns = append(lns, ln)
	}
	errc := make(chan error, len(conns)+len(lns))
	for _, ln := range lns {
		log.Info("rendezvous listening for TCP", "addr", ln.Addr())
		go func() { errc <- srv.ServeTCP(ln) }()
	}
	for i, c := range conns {
		other := otherAddress(conns, i)
		log.Info("rendezvous listening", "addr", c.LocalAddr(), "public_key", srv.PublicKey(), "relay", *relay, "turn", []string(turnURIs), "other_address", other)
		if !other.IsValid() {
			log.Warn("no other address to advertise: peers behind NATs cannot tell easy from hard (and hard ones will not try birthday punching); give --listen twice with public addresses, two IPs or two ports of one",
				"addr", c.LocalAddr())
		}
		go func() { errc <- srv.Serve(c, other) }()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
		return nil
	case err := <-errc:
		return err
	}
}

// listenAlternate listens on the UDP port after c's, at c's address.
func listenAlternate(c *net.UDPConn) (*net.UDPConn, error) {
	a := *c.LocalAddr().(*net.UDPAddr)
	if a.Port == 65535 {
		return nil, errors.New("no port after 65535")
	}
	a.Port++
	return net.ListenUDP("udp", &a)
}

func saveRendezvousState(log *slog.Logger, srv *rendezvous.Server, file string) {
	if err := srv.Save(file); err != nil {
		log.Warn("cannot save registrations", "file", file, "err", err)
	}
}

// otherAddress is the address STUN answers on conns[i] advertise as the
// server's alternate: the next listen address on another IP, or else on
// another port of the same IP. A NAT that maps per destination maps per
// destination port too (RFC 4787's endpoint-dependent mapping), so a host
// with one public address still tells easy from hard with two ports; only
// the rare NAT that maps per address alone would pass for easy. A socket
// bound to an unspecified address (0.0.0.0) advertises another port of an
// unspecified address, which the server fills in per packet with the
// address the packet came to (rendezvous.Server.Serve).
func otherAddress(conns []*net.UDPConn, i int) netip.AddrPort {
	local := func(c *net.UDPConn) netip.AddrPort {
		a := c.LocalAddr().(*net.UDPAddr).AddrPort()
		return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	}
	self := local(conns[i])
	if self.Addr().IsUnspecified() {
		for j := 1; j < len(conns); j++ {
			if o := local(conns[(i+j)%len(conns)]); o.Addr().IsUnspecified() && o.Port() != self.Port() {
				return o
			}
		}
		return netip.AddrPort{}
	}
	var samePort netip.AddrPort
	for j := 1; j < len(conns); j++ {
		o := local(conns[(i+j)%len(conns)])
		switch {
		case o.Addr().IsUnspecified() || o.Addr().Is4() != self.Addr().Is4():
		case o.Addr() != self.Addr():
			return o
		case o.Port() != self.Port() && !samePort.IsValid():
			samePort = o
		}
	}
	return samePort
}

// loadOrCreateKey reads a base64 private key, creating the file with a new
// key, readable by its owner alone, when it does not exist.
func loadOrCreateKey(path string) (key.Private, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := key.NewPrivate()
		if err != nil {
			return key.Private{}, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return key.Private{}, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return key.Private{}, err
		}
		_, err = fmt.Fprintln(f, k.Encode())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return k, err
	}
	if err != nil {
		return key.Private{}, err
	}
	k, err := key.ParsePrivate(strings.TrimSpace(string(b)))
	if err != nil {
		return key.Private{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func runUp(args []string) error {
	fs := newFlags("up", "[flags] FILE", "Bring up the tunnel FILE describes and run it in the foreground until SIGINT or SIGTERM.\n"+
		"The interface is named after FILE without .conf, as wg-quick does. SIGHUP reloads FILE\n"+
		"(as punchtun syncconf).")
	iface := fs.String("interface", "", "interface name (default: FILE's base name without .conf)")
	runDir := fs.String("run-dir", tunnel.RunDir(), "directory for the status socket")
	stateDir := fs.String("state-dir", tunnel.StateDir(), "directory where the listen port and peers' last endpoints are kept\nacross restarts, so peers reconnect while the rendezvous is down; '-' for none")
	metricsAddr := addMetricsFlag(fs, "127.0.0.1:9101")
	portMapping := addPortMappingFlag(fs)
	logf := addLogFlags(fs)
	userOpts := addUserspaceFlags(fs)
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	path := pos[0]
	if *iface == "" {
		*iface = strings.TrimSuffix(filepath.Base(path), ".conf")
	}
	if len(*iface) == 0 || len(*iface) > 15 || strings.ContainsAny(*iface, "/ \t\n:") {
		return fmt.Errorf("bad interface name %q (at most 15 characters, no '/', ':' or spaces)", *iface)
	}
	log := logf.logger()
	bind.TuneGC() // a tunnel's heap is small and bounded: collect it often
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// wg-quick's words, for the same mistake: the file holds a private key.
		fmt.Fprintf(os.Stderr, "Warning: `%s' is world accessible\n", path)
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if err := portMapping.apply(cfg); err != nil {
		return err
	}
	metrics, err := listenMetrics(*metricsAddr)
	if err != nil {
		return err
	}
	defer metrics.close()
	t, err := tunnel.Up(cfg, tunnel.Options{Interface: *iface, RunDir: *runDir, StateDir: *stateDir, Logger: log, ConfigFile: path, Userspace: *userOpts})
	if err != nil {
		return err
	}
	defer t.Close()
	metrics.serve(log, tunnel.NewCollector(t))
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)
	for {
		select {
		case <-reload:
			log.Info("SIGHUP: reloading", "file", path)
			if err := t.ReloadFile(""); err != nil {
				log.Error("config not reloaded; the tunnel runs on unchanged", "err", err)
			}
		case s := <-stop:
			log.Info("shutting down", "signal", s.String())
			return nil
		case <-t.Done():
			log.Warn("WireGuard device stopped")
			return nil
		}
	}
}
