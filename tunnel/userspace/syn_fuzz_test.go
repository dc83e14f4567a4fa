package userspace

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// tcpSegment is a TCP segment (IPv4 or IPv6) with right checksums.
func tcpSegment(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags header.TCPFlags, opts, data []byte) []byte {
	tcp := make([]byte, 20, 20+len(opts)+len(data))
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = byte((20+len(opts))/4) << 4
	tcp[13] = byte(flags)
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	tcp = append(append(tcp, opts...), data...)
	// IPv6's pseudo-header; IPv4's (its length in 16 bits) sums the same.
	pseudo := append(append(append([]byte{}, src.AsSlice()...), dst.AsSlice()...), 0, 0, 0, 0, 0, 0, 0, 6)
	binary.BigEndian.PutUint32(pseudo[len(pseudo)-8:], uint32(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], inetChecksum(append(pseudo, tcp...)))
	if src.Is6() {
		ip := make([]byte, 40)
		ip[0], ip[6], ip[7] = 0x60, 6, 64
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		copy(ip[8:], src.AsSlice())
		copy(ip[24:], dst.AsSlice())
		return append(ip, tcp...)
	}
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
	ip = append(append(ip, src.AsSlice()...), dst.AsSlice()...)
	binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip))
	return append(ip, tcp...)
}

// FuzzSYNOptions: a peer connects to the stack with whatever options in
// its SYN (an MSS down to nothing, window scaling, SACK, timestamps,
// garbage) and takes 16 KiB, acknowledging each segment: every segment
// the stack sends, cut from superpackets at the MSS those options made,
// fits the MTU and the MSS the stack took from them, with right
// checksums, and the data arrives whole and in order.
func FuzzSYNOptions(f *testing.F) {
	peer, local := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	s, err := NewStack([]netip.Addr{local}, 1280)
	if err != nil {
		f.Fatal(err)
	}
	ln, err := s.ListenTCP(netip.AddrPortFrom(local, 5201))
	if err != nil {
		f.Fatal(err)
	}
	data := make([]byte, 16<<10)
	for i := range data {
		data[i] = byte(i * 13)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.Write(data); c.Close() }()
		}
	}()
	// What the stack sends, to the iteration reading it; dropped when
	// none does (the stack sends again what is not acknowledged).
	sent := make(chan []byte, 1024)
	go func() {
		defer wg.Done()
		bufs, sizes := make([][]byte, readBatch), make([]int, readBatch)
		for i := range bufs {
			bufs[i] = make([]byte, 65535)
		}
		for {
			n, err := s.dev.Read(bufs, sizes, 0)
			if err != nil {
				return
			}
			for i := range n {
				select {
				case sent <- bytes.Clone(bufs[i][:sizes[i]]):
				default:
				}
			}
		}
	}()
	f.Cleanup(func() { ln.Close(); s.Device().Close(); wg.Wait() })

	f.Add([]byte{2, 4, 0, 48})                                  // the smallest MSS taken
	f.Add([]byte{2, 4, 0, 1, 3, 3, 14, 1})                      // an MSS of 1, the largest window scale
	f.Add([]byte{4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1})    // SACK, timestamps
	f.Add([]byte{2, 4, 0xff, 0xff, 2, 3, 0, 1, 0xff, 0})        // a large MSS, a short one, an unknown option
	f.Add([]byte{8, 10, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0}) // timestamps alone, EOL
	var port uint16 = 1024
	f.Fuzz(func(t *testing.T, opts []byte) {
		opts = opts[:min(len(opts), 40)]
		for len(opts)%4 != 0 {
			opts = append(opts, header.TCPOptionNOP)
		}
		mss := int(header.ParseSynOptions(opts, false).MSS) // as the stack takes it
		port++
		if port == 0 {
			port = 1024
		}
		sport := port

		// next is the next segment the stack sends to sport, checked.
		next := func() header.TCP {
			deadline := time.After(10 * time.Second)
			for {
				var pkt []byte
				select {
				case pkt = <-sent:
				case <-deadline:
					t.Fatalf("options % x: the stack stopped sending", opts)
				}
				if len(pkt) < 40 || pkt[9] != 6 || binary.BigEndian.Uint16(pkt[22:]) != sport {
					continue
				}
				if len(pkt) > 1280 {
					t.Fatalf("options % x: %d bytes sent, over the MTU", opts, len(pkt))
				}
				ipLen, err := checkSegment(pkt)
				if err != nil {
					t.Fatalf("options % x: % x: %v", opts, pkt, err)
				}
				tcp := header.TCP(pkt[ipLen:])
				if n := len(tcp.Payload()); n > mss {
					t.Fatalf("options % x: a segment of %d bytes of data, the peer's MSS %d", opts, n, mss)
				}
				return tcp
			}
		}
		// Our own timestamps, echoing the stack's, where it took them.
		var tsVal uint32
		var stamps bool
		stamp := func(tcp header.TCP) []byte {
			o := header.ParseTCPOptions(tcp.Options())
			if !stamps || !o.TS {
				return nil
			}
			tsVal++
			b := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(b[4:], tsVal)
			binary.BigEndian.PutUint32(b[8:], o.TSVal)
			return b
		}
		write := func(pkt []byte) {
			if _, err := s.Device().Write([][]byte{pkt}, 0); err != nil {
				t.Fatal(err)
			}
		}

		write(tcpSegment(peer, local, sport, 5201, 1000, 0, header.TCPFlagSyn, opts, nil))
		synAck := next()
		if synAck.Flags() != header.TCPFlagSyn|header.TCPFlagAck {
			t.Fatalf("options % x: answered with flags %v", opts, synAck.Flags())
		}
		stamps = header.ParseSynOptions(synAck.Options(), true).TS
		rcvNxt := synAck.SequenceNumber() + 1
		write(tcpSegment(peer, local, sport, 5201, 1001, rcvNxt, header.TCPFlagAck, stamp(synAck), nil))
		defer write(tcpSegment(peer, local, sport, 5201, 1001, 0, header.TCPFlagRst, nil, nil))

		var got []byte
		for {
			seg := next()
			if seg.SequenceNumber() == rcvNxt {
				got = append(got, seg.Payload()...)
				rcvNxt += uint32(len(seg.Payload()))
				if seg.Flags()&header.TCPFlagFin != 0 {
					rcvNxt++
				}
			}
			write(tcpSegment(peer, local, sport, 5201, 1001, rcvNxt, header.TCPFlagAck, stamp(seg), nil))
			if seg.Flags()&header.TCPFlagFin != 0 && seg.SequenceNumber()+uint32(len(seg.Payload())) == rcvNxt-1 {
				break
			}
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("options % x: %d bytes arrived, not the %d sent", opts, len(got), len(data))
		}
	})
}
