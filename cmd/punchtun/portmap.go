package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"sync"
	"time"

	"github.com/punchtun/punchtun/nat/portmap"
	"github.com/punchtun/punchtun/tunnel"
	"github.com/punchtun/punchtun/tunnel/config"
)

// portMappingFlag is `up --port-mapping`: it overrides the config's
// PortMapping.
type portMappingFlag struct{ mode *string }

func addPortMappingFlag(fs *flag.FlagSet) portMappingFlag {
	return portMappingFlag{fs.String("port-mapping", "", "ask the router for a port forward: auto (all three at once), off, natpmp, pcp or upnp\n(default: the config's PortMapping, else auto)")}
}

func (f portMappingFlag) apply(cfg *config.Config) error {
	if *f.mode == "" {
		return nil
	}
	if _, err := portmap.ParseMode(*f.mode); err != nil {
		return fmt.Errorf("--port-mapping: %w", err)
	}
	cfg.Interface.PortMapping = *f.mode
	return nil
}

// printPortMapping is status's line on the router's port forward.
func printPortMapping(pm tunnel.PortMappingStatus) {
	switch {
	case pm.Mode == "off":
		fmt.Printf("  port mapping: off\n")
	case pm.Offered:
		fmt.Printf("  port mapping: %s %s, %s left\n", pm.Protocol, pm.External, time.Duration(pm.LifetimeLeft)*time.Second)
	case pm.Protocol != 0:
		fmt.Printf("  port mapping: %s %s, not offered: %s\n", pm.Protocol, pm.External, pm.Reason)
	default:
		fmt.Printf("  port mapping (%s): none: %s\n", pm.Mode, pm.Reason)
	}
}

// portMappingCheck is netcheck's report on the default gateway's port
// mapping protocols: which answer (a refusal is an answer), and why the
// others do not.
type portMappingCheck struct {
	Gateway string            `json:"gateway,omitempty"`
	Answers map[string]bool   `json:"answers"`
	Errors  map[string]string `json:"errors,omitempty"`
}

// checkPortMapping asks the gateway each protocol at once, each within
// portmap.AskTimeout.
func checkPortMapping(ctx context.Context) portMappingCheck {
	pc := portMappingCheck{Answers: map[string]bool{}, Errors: map[string]string{}}
	gw, err := portmap.DefaultGateway()
	if err != nil {
		for _, p := range portmap.Protocols {
			pc.Answers[p.String()], pc.Errors[p.String()] = false, err.Error()
		}
		return pc
	}
	pc.Gateway = gw.String()
	ctx, cancel := context.WithTimeout(ctx, portmap.AskTimeout)
	defer cancel()
	errs := make([]error, len(portmap.Protocols))
	var wg sync.WaitGroup
	for i, p := range portmap.Protocols {
		wg.Go(func() { errs[i] = (&portmap.Client{Gateway: gw}).Probe(ctx, p) })
	}
	wg.Wait()
	for i, p := range portmap.Protocols {
		var refused *portmap.RefusedError
		pc.Answers[p.String()] = errs[i] == nil || errors.As(errs[i], &refused)
		if errs[i] != nil {
			pc.Errors[p.String()] = errs[i].Error()
		}
	}
	return pc
}

func (pc portMappingCheck) print() {
	fmt.Printf("Port mapping:   gateway %s\n", cmp.Or(pc.Gateway, "none"))
	for _, p := range portmap.Protocols {
		if pc.Answers[p.String()] {
			fmt.Printf("  %-7s answers %s\n", p, pc.Errors[p.String()])
		} else {
			fmt.Printf("  %-7s no: %s\n", p, pc.Errors[p.String()])
		}
	}
}
