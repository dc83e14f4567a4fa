package portmap

import (
	"bufio"
	"bytes"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// SSDP, to find the gateway's UPnP IGD: an M-SEARCH to the multicast
// group, and the LOCATION of its description in the unicast answers. Only
// an answer whose description is on the gateway itself counts: another
// host on the LAN can answer too.

const (
	ssdpGroup = "239.255.255.250:1900"
	igdType1  = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
	igdType2  = "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
	// maxSSDPAnswer bounds an answer we read.
	maxSSDPAnswer = 2048
)

func ssdpSearch(target string) []byte {
	return []byte("M-SEARCH * HTTP/1.1\r\n" +
		"HOST: " + ssdpGroup + "\r\n" +
		"MAN: \"ssdp:discover\"\r\n" +
		"MX: 1\r\n" +
		"ST: " + target + "\r\n\r\n")
}

// parseSSDPAnswer reads an M-SEARCH answer and returns the IGD's
// description URL, if it names an internet gateway at gw over http.
func parseSSDPAnswer(b []byte, gw netip.Addr) (*url.URL, bool) {
	if len(b) > maxSSDPAnswer {
		return nil, false
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return nil, false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false
	}
	st := resp.Header.Get("St")
	if st != igdType1 && st != igdType2 {
		return nil, false
	}
	loc, err := url.Parse(strings.TrimSpace(resp.Header.Get("Location")))
	if err != nil || !onGateway(loc, gw) {
		return nil, false
	}
	return loc, true
}

// onGateway reports whether u is an http URL on gw's own address.
func onGateway(u *url.URL, gw netip.Addr) bool {
	if u == nil || u.Scheme != "http" {
		return false
	}
	host, err := netip.ParseAddr(u.Hostname())
	return err == nil && host.Unmap() == gw
}
