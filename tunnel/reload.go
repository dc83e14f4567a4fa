package tunnel

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/punchtun/punchtun/tunnel/config"
)

// Reloading a running interface (`punchtun syncconf IFACE [FILE]`, SIGHUP
// to `punchtun up`), as `wg syncconf` does for wg-quick: the config is
// read anew and only the difference is applied. Peers that did not change
// keep their WireGuard sessions and their paths; added peers are asked
// for at once; removed peers and rendezvous are let go. Addresses, routes
// and the MTU follow. What a running interface cannot take — a new
// PrivateKey, ListenPort, FwMark, Table, DNS, Domain, or a default route in
// AllowedIPs — is refused, naming the key, and nothing changes. Hooks are not run by a reload: PreUp and
// PostUp ran at up; the PreDown and PostDown of the latest config run at
// down.

// Reload applies cfg, the interface's config read anew. On error nothing
// changed, except when applying the routes or addresses failed half way
// (said in the error), since WireGuard's peers are already set then.
func (t *Tunnel) Reload(cfg *config.Config) error {
	t.reloadMu.Lock()
	defer t.reloadMu.Unlock()
	old := t.config()
	if err := checkLive(old, cfg); err != nil {
		return err
	}
	if err := checkUserspaceLive(old, cfg); err != nil {
		return err
	}
	uapi, err := reloadUAPI(old, cfg)
	if err != nil {
		return err
	}
	mtu := cmp.Or(cfg.Interface.MTU, config.DefaultMTU)

	// The control plane first: a new peer's PeerEndpoint must exist when
	// WireGuard parses its endpoint.
	if !t.ctl.Reconfigure(controlConfigOf(cfg, t.name, mtu)) {
		return fmt.Errorf("%s is going down", t.name)
	}
	t.tun.SetNetwork(cfg.Interface.NetworkPrefixes(), staticAllowedIPs(cfg))
	if t.user != nil {
		t.user.routeStatic(cfg.Peers)
	}
	if uapi != "" {
		if err := t.dev.IpcSet(uapi); err != nil {
			return fmt.Errorf("configure WireGuard: %w", err)
		}
	}
	t.cfgMu.Lock()
	t.cfg = cfg
	t.cfgMu.Unlock()
	if t.names != nil {
		t.names.Update(cfg)
	} else if t.user != nil {
		t.user.resolver.Update(cfg)
	}
	if err := t.hostIface.Reconfigure(t.hostIfaceConfig(old), t.hostIfaceConfig(cfg)); err != nil {
		return fmt.Errorf("peers reloaded, but the interface was not fully reconfigured: %w", err)
	}
	t.log.Info("config reloaded", "peers", len(cfg.Peers), "rendezvous", len(cfg.Interface.Rendezvous))
	warnCertificate(t.log, cfg)
	return nil
}

// warnCertificate says when the other members will not take this
// interface's certificate: it still runs, for its static peers.
func warnCertificate(log *slog.Logger, cfg *config.Config) {
	if err := cfg.Interface.CertificateProblem(time.Now()); err != nil {
		log.Warn("the network's members will refuse this interface's certificate: it reaches none of them", "err", err)
	} else if c := cfg.Interface.Certificate; c != nil {
		log.Info("member of the network", "network", cfg.Interface.Network, "name", c.Name, "valid_until", c.NotAfter)
	}
}

// checkLive refuses what a running interface cannot change.
func checkLive(old, cfg *config.Config) error {
	o, n := old.Interface, cfg.Interface
	switch {
	case o.PrivateKey != n.PrivateKey:
		return cfg.KeyError("PrivateKey", "cannot change while the interface runs (peers know it by its public key); bring it down and up")
	case o.ListenPort != n.ListenPort:
		return cfg.KeyError("ListenPort", "cannot change while the interface runs (the NATs' mappings and the peers' paths use the port); bring it down and up")
	case o.NoLocalCandidates != n.NoLocalCandidates:
		return cfg.KeyError("LocalCandidates", "cannot change while the interface runs (the addresses already offered stay known); bring it down and up")
	case o.FwMark != n.FwMark:
		return cfg.KeyError("FwMark", "cannot change while the interface runs; bring it down and up")
	case o.Table != n.Table:
		return cfg.KeyError("Table", "cannot change while the interface runs; bring it down and up")
	case !slices.Equal(o.DNS, n.DNS) || !slices.Equal(o.DNSSearch, n.DNSSearch):
		return cfg.KeyError("DNS", "cannot change while the interface runs; bring it down and up")
	case o.Domain != n.Domain:
		return cfg.KeyError("Domain", "cannot change while the interface runs; bring it down and up")
	case !slices.Equal(defaultRoutes(old), defaultRoutes(cfg)):
		return fmt.Errorf("%s: AllowedIPs: a default route (0.0.0.0/0, ::/0) cannot be added or removed while the interface runs (full tunnel); bring it down and up", cfg.File())
	}
	return nil
}

// reloadUAPI renders the WireGuard changes from old to cfg: removed peers,
// and added or changed peers whole. Unchanged peers are left out, so
// nothing of theirs is touched.
func reloadUAPI(old, cfg *config.Config) (string, error) {
	var b strings.Builder
	was := make(map[[32]byte]config.Peer, len(old.Peers))
	for _, p := range old.Peers {
		was[p.PublicKey] = p
	}
	for _, p := range cfg.Peers {
		if o, ok := was[p.PublicKey]; !ok || !sameWireGuard(o, p) {
			if err := uapiPeer(&b, p); err != nil {
				return "", err
			}
		}
		delete(was, p.PublicKey)
	}
	for k := range was {
		uapiRemove(&b, k)
	}
	return b.String(), nil
}

// sameWireGuard reports whether WireGuard's view of a peer is unchanged
// (Name is punchtun's alone).
func sameWireGuard(a, b config.Peer) bool {
	a.Name, b.Name = "", ""
	return reflect.DeepEqual(a, b)
}

// ReloadFile reads the config again from file ("": the file the
// interface came up from) and applies it.
func (t *Tunnel) ReloadFile(file string) error {
	if file == "" {
		file = t.configFile
	}
	if file == "" {
		return errors.New("no config file to reload: the interface was not brought up from one")
	}
	cfg, err := config.Load(file)
	if err != nil {
		return err
	}
	return t.Reload(cfg)
}

// serveSyncConf answers a syncconf request on the status socket with
// {"ok":true} or {"error":...}.
func (t *Tunnel) serveSyncConf(c net.Conn, req request) {
	var err error
	if req.Config != nil {
		var cfg *config.Config
		if cfg, err = config.Parse(req.File, bytes.NewReader(req.Config)); err == nil {
			err = t.Reload(cfg)
		}
	} else {
		err = t.ReloadFile("")
	}
	if err != nil {
		t.log.Warn("config not reloaded", "err", err)
		json.NewEncoder(c).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(c).Encode(map[string]bool{"ok": true})
}

// SyncConf asks the punchtun running iface to apply the config in
// contents, read from file; nil contents: to read its own file again.
func SyncConf(runDir, iface, file string, contents []byte) error {
	return askRunning(runDir, iface, request{Request: "syncconf", File: file, Config: contents})
}

// Publish hands the running interface iface a network's signed policy or
// revocation (its encoding), as `punchtun network publish` does; the error
// is the interface's when it refuses it.
func Publish(runDir, iface string, doc []byte) error {
	return askRunning(runDir, iface, request{Request: "publish", Config: doc})
}

// askRunning sends req to the running iface and waits for its verdict.
func askRunning(runDir, iface string, req request) error {
	c, err := dialStatus(runDir, iface)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	line, _ := json.Marshal(req)
	if _, err := c.Write(append(line, '\n')); err != nil {
		return err
	}
	var reply struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(c).Decode(&reply); err != nil {
		return fmt.Errorf("read the reply of %s: %w", iface, err)
	}
	switch {
	case reply.Error != "":
		return errors.New(reply.Error)
	case !reply.OK:
		return fmt.Errorf("the punchtun running %s does not know %s: it is older than this punchtun; restart it", iface, req.Request)
	}
	return nil
}
