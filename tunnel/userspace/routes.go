package userspace

import "net/netip"

// peerRoutes is the interface's routing as WireGuard's: which peer each
// address goes to, by the longest of the peers' AllowedIPs that holds it.
// Immutable; SetPeerRoutes replaces it whole.
type peerRoutes struct {
	// peer is each prefix (masked) to its peer's index; noPeer for a
	// prefix more than one peer claims, whose holder here is unknown.
	peer map[netip.Prefix]int
	// bits4 and bits6 are the prefix lengths in peer, longest first.
	bits4, bits6 []int
}

// noPeer: the address is routed to no peer known for certain.
const noPeer = -1

func newPeerRoutes(peers [][]netip.Prefix) *peerRoutes {
	r := &peerRoutes{peer: make(map[netip.Prefix]int)}
	var has4, has6 [129]bool
	for i, prefixes := range peers {
		for _, p := range prefixes {
			if !p.IsValid() {
				continue
			}
			p = p.Masked()
			owner := i
			if j, ok := r.peer[p]; ok && j != i {
				owner = noPeer
			}
			r.peer[p] = owner
			if p.Addr().Is4() {
				has4[p.Bits()] = true
			} else {
				has6[p.Bits()] = true
			}
		}
	}
	for b := 128; b >= 0; b-- {
		if has4[b] {
			r.bits4 = append(r.bits4, b)
		}
		if has6[b] {
			r.bits6 = append(r.bits6, b)
		}
	}
	return r
}

// lookup is the index of the peer a is routed to; noPeer for none.
func (r *peerRoutes) lookup(a netip.Addr) int {
	bits := r.bits6
	if a.Is4() {
		bits = r.bits4
	}
	for _, b := range bits {
		p, _ := a.Prefix(b)
		if i, ok := r.peer[p]; ok {
			return i
		}
	}
	return noPeer
}

// sameRoute reports whether a and b are routed to the same peer.
func (r *peerRoutes) sameRoute(a, b netip.Addr) bool {
	i := r.lookup(a)
	return i != noPeer && i == r.lookup(b)
}

// SetPeerRoutes tells the stack which addresses each peer routes: peers[i]
// are one peer's AllowedIPs (a member's, its certificate's addresses). An
// ICMP error reaches the stack only when its source and the destination
// of the packet it quotes are routed to the same peer (icmp.go). Until
// the first call no peer routes anything. Safe beside Write.
func (s *Stack) SetPeerRoutes(peers [][]netip.Prefix) {
	s.dev.routes.Store(newPeerRoutes(peers))
}
