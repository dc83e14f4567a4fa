package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/punchtun/punchtun/nat/portmap"
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
func printPortMapping(pm portmap.Status) {
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
