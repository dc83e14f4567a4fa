package userspace

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestWriteDeliversEveryFlow: a batch holding a segment of each of
// several flows that GRO keeps in the same bucket (their ports summing
// alike modulo its 8 buckets) hands every one to the stack within Write.
func TestWriteDeliversEveryFlow(t *testing.T) {
	for _, addrs := range [][2]string{{"100.64.0.1", "100.64.0.2"}, {"fd00::1", "fd00::2"}} {
		t.Run(addrs[0], func(t *testing.T) {
			src, dst := netip.MustParseAddr(addrs[0]), netip.MustParseAddr(addrs[1])
			s, err := NewStack([]netip.Addr{dst}, 1280)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Device().Close()
			const flows = 5
			var batch [][]byte
			for i := range flows {
				// A full segment, without PSH: one GRO would hold on to.
				pkt := superPacket(src, dst, 1, tcpACK, make([]byte, 1000))
				ipLen := len(pkt) - 32 - 1000
				binary.BigEndian.PutUint16(pkt[ipLen:], uint16(40000+8*i))
				batch = append(batch, pkt)
			}
			before := s.stack.Stats().IP.PacketsDelivered.Value()
			if _, err := s.Device().Write(batch, 0); err != nil {
				t.Fatal(err)
			}
			if got := s.stack.Stats().IP.PacketsDelivered.Value() - before; got != flows {
				t.Errorf("%d of the batch's %d segments delivered by the end of Write", got, flows)
			}
		})
	}
}
