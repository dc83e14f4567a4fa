package portmap

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeIGD is a UPnP IGD v1 on loopback: an SSDP responder and an HTTP
// server with its description and WANIPConnection:1's control URL.
type fakeIGD struct {
	mu      sync.Mutex
	actions []string // SOAP actions, in order
	refuse  int      // AddPortMapping's UPnP error code (0: accept)
	// refuseOnce is the first AddPortMapping's error code alone.
	refuseOnce int
	// endless names what is answered without end ("desc" or "soap").
	endless string
	// decoy, if set, is a LOCATION answered before the real one, as a
	// spoofer on the LAN would in the gateway's name.
	decoy string
	srv   *httptest.Server
}

// sent is the SOAP actions g got so far, in order, space-separated.
func (g *fakeIGD) sent() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(g.actions, " ")
}

const igdDesc = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><friendlyName>fake</friendlyName>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>CONTROL</controlURL>
<eventSubURL>/evt</eventSubURL><SCPDURL>/scpd.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>`

func soapFault(code int) string {
	return `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault>` +
		`<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">` +
		`<errorCode>` + strconv.Itoa(code) + `</errorCode><errorDescription>refused</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`
}

// newFakeIGD serves the IGD; control is the control URL its description
// gives.
func newFakeIGD(t *testing.T, control string) (*fakeIGD, *Client) {
	g := &fakeIGD{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		endless := g.endless
		g.mu.Unlock()
		if endless == "desc" && r.URL.Path == "/rootDesc.xml" || endless == "soap" && r.URL.Path == "/ctl" {
			if endless == "desc" {
				io.WriteString(w, `<?xml version="1.0"?><root><x>`)
			} else {
				io.WriteString(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><x>`)
			}
			for chunk := strings.Repeat("a", 64<<10); ; {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
		}
		switch {
		case r.URL.Path == "/other.xml": // a media server's
			io.WriteString(w, `<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>`+
				`<device><deviceType>urn:schemas-upnp-org:device:MediaServer:1</deviceType><friendlyName>media</friendlyName></device></root>`)
		case r.URL.Path == "/rootDesc.xml":
			io.WriteString(w, strings.Replace(igdDesc, "CONTROL", control, 1))
		case r.URL.Path == "/ctl":
			action := r.Header.Get("SOAPAction")
			action = action[strings.LastIndex(action, "#")+1 : len(action)-1]
			g.mu.Lock()
			g.actions = append(g.actions, action)
			refuse := g.refuse
			if action == "AddPortMapping" && g.refuseOnce != 0 {
				refuse, g.refuseOnce = g.refuseOnce, 0
			}
			g.mu.Unlock()
			w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
			switch {
			case action == "GetExternalIPAddress":
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, soapFault(501)) // as miniupnpd for a reserved address
			case action == "AddPortMapping" && refuse != 0:
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, soapFault(refuse))
			default:
				io.WriteString(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:`+action+
					`Response xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"></u:`+action+`Response></s:Body></s:Envelope>`)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	g.srv = srv
	ssdp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, src, err := ssdp.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			st := igdType1
			if !strings.Contains(string(buf[:n]), st) {
				continue
			}
			g.mu.Lock()
			locs := []string{srv.URL + "/rootDesc.xml"}
			if g.decoy != "" {
				locs = append([]string{g.decoy}, locs...)
			}
			g.mu.Unlock()
			for _, loc := range locs {
				ssdp.WriteToUDPAddrPort([]byte("HTTP/1.1 200 OK\r\nST: "+st+"\r\nLOCATION: "+loc+"\r\n\r\n"), src)
			}
		}
	}()
	t.Cleanup(func() { ssdp.Close(); <-done })
	c := &Client{Gateway: netip.MustParseAddr("127.0.0.1"), ssdpAddr: ssdp.LocalAddr().String()}
	return g, c
}

// TestUPnPMap: found by SSDP, mapped with AddPortMapping, its address
// left for STUN to tell (the router would not say it), deleted again.
func TestUPnPMap(t *testing.T) {
	g, c := newFakeIGD(t, "/ctl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m, err := c.Map(ctx, UPnP, 4000, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.External.Addr().IsValid() || m.External.Port() != 4000 || m.Lifetime != time.Hour {
		t.Fatalf("mapping %+v", m)
	}
	if _, err := c.Map(ctx, UPnP, 4000, &m, time.Hour); err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if err := c.Unmap(ctx, m); err != nil {
		t.Fatal(err)
	}
	got := g.sent()
	if want := "AddPortMapping GetExternalIPAddress AddPortMapping GetExternalIPAddress DeletePortMapping"; got != want {
		t.Fatalf("actions %q, want %q", got, want)
	}
}

// TestUPnPRefused: the router's error code comes back as a RefusedError.
func TestUPnPRefused(t *testing.T) {
	g, c := newFakeIGD(t, "/ctl")
	g.refuse = 606
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := c.Map(ctx, UPnP, 4000, nil, time.Hour)
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code != 606 || err.Error() != "upnp: router refused: result code 606 (action not authorized)" {
		t.Fatalf("err %v", err)
	}
}

// TestUPnPElsewhere: a description whose control URL is on another host
// is not followed.
func TestUPnPElsewhere(t *testing.T) {
	g, c := newFakeIGD(t, "http://192.0.2.1:1/ctl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := c.Map(ctx, UPnP, 4000, nil, time.Hour); err == nil || !strings.Contains(err.Error(), "no WAN connection service on the gateway") {
		t.Fatalf("err %v", err)
	}
	if got := g.sent(); got != "" {
		t.Fatalf("actions sent elsewhere: %v", got)
	}
}

// TestUPnPConflict: a port another host holds (718) is asked again on
// another port (IGDv1 has no AddAnyPortMapping); another refusal is final.
func TestUPnPConflict(t *testing.T) {
	g, c := newFakeIGD(t, "/ctl")
	g.refuseOnce = 718
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m, err := c.Map(ctx, UPnP, 4000, nil, time.Hour)
	if err != nil || m.External.Port() == 4000 || m.External.Port() < 1024 {
		t.Fatalf("mapping %+v, err %v", m, err)
	}
	g.refuseOnce = 606
	var refused *RefusedError
	if _, err := c.Map(ctx, UPnP, 4000, nil, time.Hour); !errors.As(err, &refused) || refused.Code != 606 {
		t.Fatalf("err %v, want the router's 606", err)
	}
	got := g.sent()
	if want := "AddPortMapping AddPortMapping GetExternalIPAddress AddPortMapping"; got != want {
		t.Fatalf("actions %q, want %q", got, want)
	}
}

// TestUPnPRenewAfterRestart: a renewal whose service is gone (a restarted
// router serving on another port) finds the service anew and maps there.
func TestUPnPRenewAfterRestart(t *testing.T) {
	old, c := newFakeIGD(t, "/ctl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m, err := c.Map(ctx, UPnP, 4000, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	old.srv.Close()
	g, c := newFakeIGD(t, "/ctl")
	renewed, err := c.Map(ctx, UPnP, 4000, &m, time.Hour)
	if err != nil || renewed.External.Port() != 4000 {
		t.Fatalf("renewal %+v: %v", renewed, err)
	}
	got := g.sent()
	if first, _, _ := strings.Cut(got, " "); first != "AddPortMapping" {
		t.Fatalf("the restarted router got %v", got)
	}
}

// TestUPnPEndlessAnswer: a gateway that answers without end, with its
// description or a SOAP reply, gets an error once maxUPnPBody is read,
// not the ask's whole deadline and all it sent held in memory.
func TestUPnPEndlessAnswer(t *testing.T) {
	for _, what := range []string{"desc", "soap"} {
		t.Run(what, func(t *testing.T) {
			g, c := newFakeIGD(t, "/ctl")
			g.endless = what
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := c.Map(ctx, UPnP, 4000, nil, time.Hour)
			if err == nil || !strings.Contains(err.Error(), "larger than 256 KiB") {
				t.Fatalf("err %v, want the answer refused as too large", err)
			}
		})
	}
}

// TestUPnPDecoyAnswer: an SSDP answer in the gateway's name that leads
// nowhere (a port the gateway does not serve, a description without the
// service) does not end the search: the gateway's own answer after it is
// taken.
func TestUPnPDecoyAnswer(t *testing.T) {
	closed, _ := net.Listen("tcp4", "127.0.0.1:0")
	closedURL := "http://" + closed.Addr().String() + "/rootDesc.xml"
	closed.Close()
	for name, decoy := range map[string]string{"closed port": closedURL, "no service": "NOSERVICE"} {
		t.Run(name, func(t *testing.T) {
			g, c := newFakeIGD(t, "/ctl")
			if decoy == "NOSERVICE" {
				decoy = g.srv.URL + "/other.xml"
			}
			g.mu.Lock()
			g.decoy = decoy
			g.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if m, err := c.Map(ctx, UPnP, 4000, nil, time.Hour); err != nil || m.External.Port() != 4000 {
				t.Fatalf("mapping %+v, err %v: the decoy answer ended the search", m, err)
			}
		})
	}
}
