//go:build !linux

package dhcp

import (
	"errors"
	"net"
)

// listen needs SO_BINDTODEVICE, which only Linux has.
func listen(iface string, port int) (*net.UDPConn, error) {
	return nil, errors.New("the DHCP server runs on Linux only")
}
