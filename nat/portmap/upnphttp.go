package portmap

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/huin/goupnp"
)

// maxUPnPBody bounds what we read of one UPnP answer, a description or a
// SOAP reply (a real gateway's description is a few KB). Unbounded, a
// rogue or spoofed gateway could feed the XML decoder until the ask's
// deadline, and it would hold all of it.
const maxUPnPBody = 256 << 10

// upnpHTTP is the HTTP client goupnp uses for descriptions (its package
// default, set at init) and for SOAP (set on each service client): no
// proxy from the environment (the gateway is on the LAN), and no body
// beyond maxUPnPBody.
var upnpHTTP = &http.Client{
	Transport: limitBodies{&http.Transport{
		DialContext:            (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		ResponseHeaderTimeout:  AskTimeout,
		MaxResponseHeaderBytes: 16 << 10,
		MaxIdleConns:           2,
		IdleConnTimeout:        30 * time.Second,
	}},
}

func init() { goupnp.HTTPClientDefault = upnpHTTP }

// limitBodies is a transport whose responses' bodies end in an error
// after maxUPnPBody bytes.
type limitBodies struct{ http.RoundTripper }

func (l limitBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.RoundTripper.RoundTrip(req)
	if err == nil {
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxUPnPBody}
	}
	return resp, err
}

type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("upnp: the gateway's answer is larger than %d KiB", maxUPnPBody>>10)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
