//go:build !linux

package pxe

import (
	"errors"
	"net"
)

// dhcpListen needs SO_BINDTODEVICE, which only Linux has.
func dhcpListen(iface string, port int) (*net.UDPConn, error) {
	return nil, errors.New("the DHCP server runs on Linux only")
}
