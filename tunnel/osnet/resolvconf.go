package osnet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// DNS, as wg-quick sets it: the config's resolvers and search domains go
// to resolvconf (Debian's resolvconf, or openresolv) as the interface's
// own record while the tunnel is up, and the record is deleted on down.
// Without resolvconf, a config with DNS fails up with a clear error
// rather than rewriting /etc/resolv.conf behind the system's back.

// resolvconfRecord is the name of the interface's record: resolvconf
// orders records by the patterns in /etc/resolvconf/interface-order, so
// the record is named under the first pattern of the form "tun*" there
// ("tun.punch0"), which ranks it as a tunnel's.
func resolvconfRecord(iface string) string {
	return resolvconfPrefix("/etc/resolvconf/interface-order") + iface
}

var orderPattern = regexp.MustCompile(`^([A-Za-z0-9-]+)\*$`)

func resolvconfPrefix(orderFile string) string {
	f, err := os.Open(orderFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := orderPattern.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			return m[1] + "."
		}
	}
	return ""
}

// resolvConf renders servers and search domains as resolv.conf lines.
func resolvConf(servers []netip.Addr, search []string) []byte {
	var b bytes.Buffer
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	return b.Bytes()
}

// SetDNS adds the interface's resolvconf record; the returned function
// deletes it.
func SetDNS(iface string, servers []netip.Addr, search []string) (func() error, error) {
	path, err := exec.LookPath("resolvconf")
	if err != nil {
		return nil, errors.New("DNS is set but resolvconf is not installed (apt install resolvconf, or openresolv); remove DNS from the config to manage resolvers yourself")
	}
	record := resolvconfRecord(iface)
	// -m 0: the tunnel's resolvers come first; -x: exclusively, as
	// wg-quick has them (openresolv takes both; Debian's ignores them).
	cmd := exec.Command(path, "-a", record, "-m", "0", "-x")
	cmd.Stdin = bytes.NewReader(resolvConf(servers, search))
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("resolvconf -a %s: %v: %s", record, err, bytes.TrimSpace(out))
	}
	return func() error {
		if out, err := exec.Command(path, "-d", record, "-f").CombinedOutput(); err != nil {
			return fmt.Errorf("resolvconf -d %s: %v: %s", record, err, bytes.TrimSpace(out))
		}
		return nil
	}, nil
}
