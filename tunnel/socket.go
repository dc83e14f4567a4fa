package tunnel

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/punchtun/punchtun/tunnel/userspace"
)

// The status socket, /var/run/punchtun/IFACE.sock, root's alone: a client
// that sends nothing (and closes its side, as QueryStatus does) gets the
// Status as JSON; one that sends a request line, {"request":"ping",...}
// or {"request":"syncconf",...}, gets the answer to it.

// request is a line a client sends on the status socket.
type request struct {
	Request   string `json:"request"` // "ping", "syncconf", "publish" or "dial"
	Peer      string `json:"peer,omitempty"`
	TimeoutMS int    `json:"timeout_ms,omitempty"`
	// syncconf: the config to apply, as read by the client from File
	// (the name its errors carry); none: the file the interface came
	// up from, read again. publish: the document's encoding, in Config.
	File   string `json:"file,omitempty"`
	Config []byte `json:"config,omitempty"`
	// dial (`punchtun nc`, userspace only): where to connect to.
	Host string `json:"host,omitempty"`
	Port int    `json:"port,omitempty"`
}

// maxRequest bounds a request line: a config with thousands of peers fits.
const maxRequest = 4 << 20

// requestWait is how long the status socket waits for a request line
// before it takes the connection for a plain status query.
const requestWait = time.Second

// StatusSocket is where the interface's status is served.
func StatusSocket(runDir, iface string) string {
	return filepath.Join(runDir, iface+".sock")
}

// serveStatus answers every connection on the status socket. The socket
// is root's alone (listenPrivate): status shows endpoints.
func (t *Tunnel) serveStatus() error {
	path := StatusSocket(t.runDir, t.name)
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("status socket %s is in use by another punchtun", path)
	}
	os.Remove(path) // a stale socket of a punchtun that was killed
	l, err := listenPrivate(path)
	if err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	conns := newConnSet()
	t.closers = append(t.closers, func() { l.Close(); conns.closeAll() }) // also removes the file
	t.spawn(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !conns.add(c) {
				continue
			}
			t.spawn(func() {
				defer conns.remove(c)
				if t.serveRequest(c) {
					return
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				st, err := t.Status()
				if err != nil {
					json.NewEncoder(c).Encode(map[string]string{"error": err.Error()})
					return
				}
				json.NewEncoder(c).Encode(st)
			})
		}
	})
	return nil
}

// serveRequest answers a request line on a status connection, and reports
// whether there was one; without one, the caller serves the status.
func (t *Tunnel) serveRequest(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(requestWait))
	br := bufio.NewReaderSize(c, maxRequest)
	line, err := br.ReadSlice('\n')
	if len(line) == 0 && err != nil {
		return false // EOF or nothing: a status query
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil || !slices.Contains([]string{"ping", "syncconf", "publish", "dial"}, req.Request) {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		json.NewEncoder(c).Encode(map[string]string{"error": fmt.Sprintf("unknown request %.100q", line)})
		return true
	}
	switch req.Request {
	case "dial":
		t.serveDial(c, br, req)
		return true
	case "syncconf":
		c.SetDeadline(time.Now().Add(time.Minute))
		t.serveSyncConf(c, req) // applied with Reload
		return true
	case "publish":
		c.SetDeadline(time.Now().Add(time.Minute))
		reply := map[string]any{"ok": true}
		if err := t.ctl.Publish(req.Config); err != nil {
			reply = map[string]any{"error": err.Error()}
		}
		json.NewEncoder(c).Encode(reply)
		return true
	}
	timeout := min(max(time.Duration(req.TimeoutMS)*time.Millisecond, 10*time.Millisecond), maxPingTimeout)
	c.SetDeadline(time.Now().Add(timeout + 5*time.Second))
	json.NewEncoder(c).Encode(t.Ping(req.Peer, timeout))
	return true
}

// Ping probes peer — its Name, its public key, or an address in its
// AllowedIPs — once over its current route and waits up to timeout for
// the pong.
func (t *Tunnel) Ping(peer string, timeout time.Duration) *PingReply {
	k, label, err := findPeer(t.config(), t.name, peer)
	if err != nil {
		return &PingReply{Peer: peer, Error: err.Error(), UnknownPeer: errors.Is(err, ErrUnknownPeer)}
	}
	reply := &PingReply{Peer: label, PublicKey: k.String()}
	res, err := t.ctl.Ping(k, timeout)
	if err != nil {
		reply.Error = err.Error()
		return reply
	}
	reply.Path, reply.Endpoint = res.Path, res.Endpoint.String()
	reply.RTTMillis = float64(res.RTT.Microseconds()) / 1000
	return reply
}

// listenPrivate listens on a Unix socket at path that only root can
// connect to, with no moment in which anyone else could: its directory is
// made private (mode 0700: created so, or changed to it) before the socket
// exists, and the socket then gets mode 0600 as well. A directory others
// may write to (/tmp, say) is refused: it cannot be made private.
func listenPrivate(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 || fi.Mode()&os.ModeSticky != 0 {
		return nil, fmt.Errorf("run directory %s is writable by others: give punchtun a directory of its own", dir)
	} else if perm&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, err
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// connSet tracks a listener's open connections, to close them at down.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newConnSet() *connSet { return &connSet{conns: map[net.Conn]struct{}{}} }

// add tracks c; false (and c closed) once closeAll ran.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

// dialStatus connects to the status socket of the punchtun running iface.
func dialStatus(runDir, iface string) (net.Conn, error) {
	c, err := net.DialTimeout("unix", StatusSocket(runDir, iface), 5*time.Second)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no punchtun runs interface %s", iface)
	}
	return c, err
}

// QueryStatus asks the punchtun running iface for its status.
func QueryStatus(runDir, iface string) (*Status, error) {
	c, err := dialStatus(runDir, iface)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.(*net.UnixConn).CloseWrite() // no request: the status
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var raw json.RawMessage
	if err := json.NewDecoder(c).Decode(&raw); err != nil {
		return nil, fmt.Errorf("read status of %s: %w", iface, err)
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return nil, fmt.Errorf("status of %s: %s", iface, e.Error)
	}
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("read status of %s: %w", iface, err)
	}
	return &st, nil
}

// Running lists the interfaces with a status socket in runDir.
func Running(runDir string) []string {
	matches, _ := filepath.Glob(filepath.Join(runDir, "*.sock"))
	var names []string
	for _, m := range matches {
		names = append(names, strings.TrimSuffix(filepath.Base(m), ".sock"))
	}
	return names
}

// serveDial answers a "dial" request (`punchtun nc`): a line saying
// whether the connection to req.Host:req.Port through the tunnel was
// made, then the connection's bytes both ways.
func (t *Tunnel) serveDial(c net.Conn, br *bufio.Reader, req request) {
	reply := func(err error) bool {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		m := map[string]any{"ok": true}
		if err != nil {
			m = map[string]any{"error": err.Error()}
		}
		e := json.NewEncoder(c).Encode(m)
		c.SetDeadline(time.Time{})
		return err == nil && e == nil
	}
	if t.user == nil {
		reply(fmt.Errorf("interface %s is not in userspace mode: reach %s directly", t.name, req.Host))
		return
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	up, err := t.user.dialer.Dial(context.Background(), "tcp", net.JoinHostPort(req.Host, strconv.Itoa(req.Port)))
	if !reply(err) {
		if up != nil {
			up.Close()
		}
		return
	}
	userspace.Splice(&readerConn{Conn: c, r: br}, up)
}
