package userspace

import (
	"math"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// linkEndpoint is the stack's network card, as gVisor sees it: what the
// stack sends waits in a queue for the device (device.go) to hand it to
// WireGuard, and what WireGuard delivers the device hands to the
// dispatcher the stack attached.
//
// It offers segmentation offload (GSO), so that gVisor's TCP builds one
// packet per 64 KiB instead of one per MTU (gso.go cuts them), and takes
// received packets' checksums for checked (RX checksum offload), which GRO
// needs: gVisor's GRO (device.go) grows the first packet's IPv4 length
// without redoing its header checksum, which the stack would then take
// for corrupt.
type linkEndpoint struct {
	mtu uint32
	// out holds what the stack sent, each packet with a reference of its
	// own; done is closed when the device closes.
	out  chan *stack.PacketBuffer
	done chan struct{}

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher
}

// outQueue is the packets the stack may have sent and the device not yet
// handed over. Past it the stack's senders wait: TCP slows down to what
// WireGuard takes, without losing a packet.
const outQueue = 256

var (
	_ stack.LinkEndpoint = (*linkEndpoint)(nil)
	_ stack.GSOEndpoint  = (*linkEndpoint)(nil)
)

func newLinkEndpoint(mtu int) *linkEndpoint {
	return &linkEndpoint{
		mtu:  uint32(mtu),
		out:  make(chan *stack.PacketBuffer, outQueue),
		done: make(chan struct{}),
	}
}

// WritePackets queues what the stack sends, waiting for room.
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for i, pkt := range pkts.AsSlice() {
		select {
		case <-e.done:
			return i, &tcpip.ErrClosedForSend{}
		default:
		}
		pkt.IncRef() // the queue's, given back if not queued
		select {
		case e.out <- pkt:
		case <-e.done:
			pkt.DecRef()
			return i, &tcpip.ErrClosedForSend{}
		}
	}
	return pkts.Len(), nil
}

// release drops what is queued; after done is closed.
func (e *linkEndpoint) release() {
	for {
		select {
		case pkt := <-e.out:
			pkt.DecRef()
		default:
			return
		}
	}
}

// GSOMaxSize: gVisor's TCP keeps a superpacket's data 160 bytes under it,
// so that with its headers it still fits IP's 16-bit length.
func (*linkEndpoint) GSOMaxSize() uint32 { return math.MaxUint16 }

// SupportedGSO: "host" GSO, TCP's segments handed over whole with
// partial checksums, as to a NIC; gVisor's own kind would cut them itself.
func (*linkEndpoint) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

// Capabilities: see linkEndpoint, and device.Write for why not checking
// received checksums is safe here.
func (*linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
}

func (e *linkEndpoint) attached() stack.NetworkDispatcher {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher
}

func (e *linkEndpoint) IsAttached() bool { return e.attached() != nil }

// The rest of stack.LinkEndpoint: a fixed MTU, and no link layer — no
// header, no address.
func (e *linkEndpoint) MTU() uint32                           { return e.mtu }
func (*linkEndpoint) SetMTU(uint32)                           {}
func (*linkEndpoint) MaxHeaderLength() uint16                 { return 0 }
func (*linkEndpoint) LinkAddress() tcpip.LinkAddress          { return "" }
func (*linkEndpoint) SetLinkAddress(tcpip.LinkAddress)        {}
func (*linkEndpoint) Wait()                                   {}
func (*linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (*linkEndpoint) AddHeader(*stack.PacketBuffer)           {}
func (*linkEndpoint) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (*linkEndpoint) Close()                                  {}
func (*linkEndpoint) SetOnCloseAction(func())                 {}
