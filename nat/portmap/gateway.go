package portmap

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
)

// parseRouteTable finds the default IPv4 gateway in Linux's
// /proc/net/route: the up gateway route to 0.0.0.0/0 with the lowest
// metric.
func parseRouteTable(b []byte) (netip.Addr, bool) {
	const rtfUp, rtfGateway = 0x1, 0x2
	var best netip.Addr
	bestMetric := -1
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// Iface Destination Gateway Flags RefCnt Use Metric Mask ...
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, err1 := strconv.ParseUint(f[3], 16, 16)
		metric, err2 := strconv.Atoi(f[6])
		gw, err3 := hex.DecodeString(f[2])
		if err1 != nil || err2 != nil || err3 != nil || len(gw) != 4 || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway {
			continue
		}
		// The kernel prints the address as a host-order (little-endian) word.
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], binary.LittleEndian.Uint32(gw))
		addr := netip.AddrFrom4(a)
		if addr.IsUnspecified() || bestMetric >= 0 && metric >= bestMetric {
			continue
		}
		best, bestMetric = addr, metric
	}
	return best, best.IsValid()
}
