package wake

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// control sets SO_BROADCAST and, with ifname, SO_BINDTODEVICE (as root or
// with CAP_NET_RAW), so a limited broadcast leaves by that interface.
func control(fd int, ifname string) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
		return fmt.Errorf("SO_BROADCAST: %w", err)
	}
	if ifname != "" {
		if err := unix.BindToDevice(fd, ifname); err != nil {
			return fmt.Errorf("SO_BINDTODEVICE %s: %w (pxeswarm serve needs root or CAP_NET_RAW for this)", ifname, err)
		}
	}
	return nil
}
