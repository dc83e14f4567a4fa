package userspace_test

import (
	"fmt"
	"testing"
	"time"
)

// TestRootlessGossipPastAWithholdingRendezvous: the rendezvous never gets
// what the laptop publishes (its NAT drops Publish messages); the laptop
// revokes the spare, and s1, which talks to both, hears of it from the
// laptop alone, inside the tunnel, and lets the spare go. Gossip is a
// packet the laptop's tunnel injects as if its stack had sent it: the
// userspace device must be woken for it, or it waits for the stack's
// next packet, which an idle member may never send.
func TestRootlessGossipPastAWithholdingRendezvous(t *testing.T) {
	h := newHarness(t)
	netKey, netPub := h.networkKey()
	echo := echoServer(t)
	nat := newRestrictedNAT(t, h.rdvAddr, "127.0.0.4")
	members, pubs := map[string]*peer{}, map[string]string{}
	for i, name := range []string{"laptop", "s1", "spare"} {
		priv, pub := h.genkey()
		pubs[name] = pub
		cert := h.signed(name+".cert", "sign", "--key", netKey, "--name", name, "--address", fmt.Sprintf("100.64.2.%d/24", i+1), pub)
		rdv := h.rdvAddr
		if name == "laptop" {
			rdv = nat.Rendezvous()
		}
		members[name] = h.up(name, h.peerConfigVia(rdv, priv, fmt.Sprintf("Network = %s\nCertificateFile = %s\nDomain = net\nForward = tcp:7=127.0.0.1:%d\n", netPub, cert, echo)))
	}
	for _, m := range members {
		m.waitRegistered(10 * time.Second) // or a lookup of it finds no one
	}
	laptop, s1 := members["laptop"], members["s1"]
	// s1 talks to the laptop (so each gossips with the other) and to the
	// spare.
	echoed(t, socksDial(t, s1, "laptop.net:7"), 1<<10)
	echoed(t, socksDial(t, s1, "spare.net:7"), 1<<10)

	nat.withhold.Store(true)
	rev := h.signed("rev-spare", "revoke", "--key", netKey, pubs["spare"])
	start := time.Now()
	laptop.publish(rev)
	eventually(t, 5*time.Second, "s1 lets the revoked spare go, told by the laptop alone", func() error {
		st, err := s1.status()
		if err != nil || st.Network == nil {
			return fmt.Errorf("s1's status: %v", err)
		}
		if st.Network.RevokedKeys != 1 {
			return fmt.Errorf("s1 holds %d revocations", st.Network.RevokedKeys)
		}
		for _, p := range st.Peers {
			if p.Name == "spare" {
				return fmt.Errorf("the spare is still s1's peer")
			}
		}
		return nil
	})
	t.Logf("withheld by the rendezvous: s1 let the revoked spare go %v after publish", time.Since(start).Round(time.Millisecond))
	if nat.withheld.Load() == 0 {
		t.Error("the laptop's NAT withheld no Publish: the rendezvous may have passed the revocation on")
	}
	if c, err := socksTry(s1, "spare.net:7", 2*time.Second); err == nil {
		c.Close()
		t.Error("s1 still reaches the revoked spare")
	}
}
