//go:build !linux

package tundev

import (
	"errors"

	"golang.zx2c4.com/wireguard/tun"
)

// No batching of TUN reads off Linux: reads pass straight through.
func tunReady(tun.Device) func() bool { return nil }

func spareMemory(int) ([]byte, func(), error) { return nil, nil, errors.New("not on this platform") }
