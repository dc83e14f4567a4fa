package portmap

import (
	"bufio"
	"bytes"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// SSDP NOTIFY: a UPnP router tells the LAN it is up (ssdp:alive, again
// every few minutes) or going down (ssdp:byebye); UPnP 1.1 routers number
// their boots (BOOTID.UPNP.ORG). A restarted router has forgotten its
// forwards, and a client that asks only UPnP would otherwise learn it at
// its next renewal, an hour later. Only the gateway's own notices count.

const (
	ssdpAlive       = "ssdp:alive"
	ssdpByebye      = "ssdp:byebye"
	igdDevicePrefix = "urn:schemas-upnp-org:device:InternetGatewayDevice:"
)

// ssdpNotice is what a NOTIFY says: alive or byebye, and the boot ID
// (-1: none given).
type ssdpNotice struct {
	alive  bool
	bootID int64
}

// parseSSDPNotify reads one NOTIFY datagram: an alive or byebye, whose
// boot ID, if given, is a number below 2^31 (UDA 1.1 §1.2.2).
func parseSSDPNotify(b []byte) (ssdpNotice, bool) {
	if len(b) > maxSSDPAnswer || !bytes.HasPrefix(b, []byte("NOTIFY ")) {
		return ssdpNotice{}, false
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		return ssdpNotice{}, false
	}
	req.Body.Close()
	if req.Method != "NOTIFY" || req.RequestURI != "*" {
		return ssdpNotice{}, false
	}
	// The gateway device's own notices: a router's other UPnP devices (a
	// media server, say) have boot IDs of their own.
	if !strings.HasPrefix(strings.TrimSpace(req.Header.Get("Nt")), igdDevicePrefix) {
		return ssdpNotice{}, false
	}
	n := ssdpNotice{bootID: -1}
	switch strings.TrimSpace(req.Header.Get("Nts")) {
	case ssdpAlive:
		n.alive = true
	case ssdpByebye:
	default:
		return ssdpNotice{}, false // ssdp:update, or anything else
	}
	if s := strings.TrimSpace(req.Header.Get("Bootid.upnp.org")); s != "" {
		id, err := strconv.ParseInt(s, 10, 32)
		if err != nil || id < 0 {
			return ssdpNotice{}, false
		}
		n.bootID = id
	}
	return n, true
}

// bootWatch follows the gateway's NOTIFYs, and tells when it has come up
// anew: a new boot ID, or alive again after a byebye. The periodic alives
// of a router that stays up tell nothing.
type bootWatch struct {
	gw     netip.Addr
	bootID int64 // the last heard; -1: none yet
	gone   bool  // a byebye since the last alive
}

// notice takes a NOTIFY from gw, and reports whether gw restarted.
func (w *bootWatch) notice(gw netip.Addr, n ssdpNotice) (restarted bool) {
	if gw != w.gw {
		*w = bootWatch{gw: gw, bootID: -1}
	}
	if !n.alive {
		w.gone = true
		return false
	}
	restarted = w.gone || n.bootID >= 0 && w.bootID >= 0 && n.bootID != w.bootID
	w.gone = false
	if n.bootID >= 0 {
		w.bootID = n.bootID
	}
	return restarted
}
