//go:build !linux

package pxe

import (
	"net"
	"net/netip"
	"testing"
)

// consoleRoom needs Linux network namespaces (see the _linux file).
type consoleRoom struct {
	bridge    string
	bridgeMAC net.HardwareAddr
}

type frameTap struct{}

func newConsoleRoom(t *testing.T, _ netip.Prefix, _ net.HardwareAddr) *consoleRoom {
	t.Skip("the console's browser test runs its server in a Linux network namespace")
	return nil
}

func (*consoleRoom) serve(*testing.T, HTTPConfig) string { return "" }
func (*consoleRoom) listen(*testing.T) net.Listener      { return nil }
func (*consoleRoom) capture(*testing.T) *frameTap        { return nil }
func (*frameTap) udp(int) []wireFrame                    { return nil }
