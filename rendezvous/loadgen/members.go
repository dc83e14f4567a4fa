//go:build linux

package main

import (
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/punchtun/punchtun/rendezvous/wire/cert"
)

// member is a simulated peer's membership: its network, its certificate
// and the address the certificate gives it.
type member struct {
	network [32]byte
	cert    []byte
	addr    netip.Addr
}

// makeMembers puts peers into n networks, a pair per network in turn (the
// two halves of a pair look each other up), each with a certificate its
// network's key signed, on all cores.
func makeMembers(peers []peer, n int) error {
	keys := make([]cert.NetworkPrivate, n)
	for i := range keys {
		k, err := cert.NewNetworkPrivate()
		if err != nil {
			return err
		}
		keys[i] = k
	}
	now := time.Now()
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(peers); i += workers {
				nk := keys[(i/2)%n]
				// 10.0.0.0/8 holds 16 million members: unique in any network.
				addr := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				c, err := cert.Sign(nk, cert.Template{Member: peers[i].pub, Name: memberName(i),
					Addresses: []netip.Prefix{netip.PrefixFrom(addr, 8)}, NotBefore: now, NotAfter: now.Add(24 * time.Hour)})
				if err != nil {
					errs[w] = err
					return
				}
				peers[i].member = &member{network: nk.Public(), cert: c.Bytes(), addr: addr}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func memberName(i int) string { return "m" + strconv.Itoa(i) }
