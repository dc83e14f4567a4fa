package portmap

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"net/url"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
)

// UPnP IGD through goupnp: its WANIPConnection (v2 or v1) or
// WANPPPConnection service on the gateway's description found by SSDP.

// upnpService is what the three goupnp service clients share.
type upnpService interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, external uint16, proto string, internal uint16,
		client string, enabled bool, desc string, lease uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, external uint16, proto string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
}

// upnpClient is the gateway's service that holds (or is to hold) a mapping.
type upnpClient struct {
	svc upnpService
	// any is the v2 service's AddAnyPortMapping: the router picks the
	// port when ours is taken (nil on v1).
	any func(ctx context.Context, external, internal uint16, client string, lease uint32) (uint16, error)
}

const upnpDescription = "punchtun"

// upnpErrors are the IGD errors a router may refuse a mapping with.
var upnpErrors = map[int]string{
	402: "invalid arguments", 501: "action failed", 606: "action not authorized",
	714: "no such entry", 715: "wildcard not permitted in source IP", 716: "wildcard not permitted in external port",
	718: "conflict in mapping entry", 724: "same port values required", 725: "only permanent leases supported",
	726: "remote host must be wildcard", 727: "external port must be wildcard", 728: "no port maps available",
	729: "conflict with other mechanisms",
}

// upnpServiceAt finds the gateway's WAN connection service in the
// description at loc, checking that its control URL is on gw too.
func upnpServiceAt(ctx context.Context, loc *url.URL, gw netip.Addr) (*upnpClient, error) {
	root, err := goupnp.DeviceByURLCtx(ctx, loc)
	if err != nil {
		return nil, fmt.Errorf("upnp: the gateway's description at %s: %w", loc, err)
	}
	if v2, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range v2 {
			if gatewayService(&c.ServiceClient, gw) {
				return &upnpClient{svc: c, any: func(ctx context.Context, external, internal uint16, client string, lease uint32) (uint16, error) {
					return c.AddAnyPortMappingCtx(ctx, "", external, "UDP", internal, client, true, upnpDescription, lease)
				}}, nil
			}
		}
	}
	if v1, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range v1 {
			if gatewayService(&c.ServiceClient, gw) {
				return &upnpClient{svc: c}, nil
			}
		}
	}
	if ppp, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, c := range ppp {
			if gatewayService(&c.ServiceClient, gw) {
				return &upnpClient{svc: c}, nil
			}
		}
	}
	return nil, fmt.Errorf("upnp: no WAN connection service on the gateway at %s", loc)
}

// gatewayService reports whether sc's control URL is on gw, and if so
// has it use upnpHTTP.
func gatewayService(sc *goupnp.ServiceClient, gw netip.Addr) bool {
	if !onGateway(&sc.SOAPClient.EndpointURL, gw) {
		return false
	}
	sc.SOAPClient.HTTPClient = *upnpHTTP
	return true
}

// add maps internal on client from external (or, if another host holds
// that, another port) for lease seconds, and returns the external port.
func (u *upnpClient) add(ctx context.Context, external, internal uint16, client netip.Addr, lease uint32) (uint16, error) {
	err := u.svc.AddPortMappingCtx(ctx, "", external, "UDP", internal, client.String(), true, upnpDescription, lease)
	if err == nil || upnpCode(err) != upnpConflict {
		return external, err // mapped, or refused for another reason than the port
	}
	if u.any != nil { // v2: the router picks a free port
		return u.any(ctx, external, internal, client.String(), lease)
	}
	// v1 has no "any port": try another, at random.
	external = uint16(1024 + rand.IntN(65535-1024))
	return external, u.svc.AddPortMappingCtx(ctx, "", external, "UDP", internal, client.String(), true, upnpDescription, lease)
}

// upnpConflict is ConflictInMappingEntry: another host holds the port.
const upnpConflict = 718

// externalAddr asks the router's WAN address: invalid if it will not say.
func (u *upnpClient) externalAddr(ctx context.Context) netip.Addr {
	s, err := u.svc.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// upnpCode is the UPnP error code of a SOAP fault (0 if err is none).
func upnpCode(err error) int {
	var fault *soap.SOAPFaultError
	if errors.As(err, &fault) {
		return fault.Detail.UPnPError.Errorcode
	}
	return 0
}

// upnpError makes a router's SOAP fault a *RefusedError.
func upnpError(err error) error {
	if code := upnpCode(err); code != 0 {
		return &RefusedError{Protocol: UPnP, Code: code}
	}
	return err
}
