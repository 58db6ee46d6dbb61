//go:build !linux

package wake

import (
	"errors"
	"syscall"
)

// control sets SO_BROADCAST; sending out of a named interface needs
// Linux's SO_BINDTODEVICE.
func control(fd int, ifname string) error {
	if ifname != "" {
		return errors.New("sending out of a named interface needs Linux: set wake.broadcasts instead")
	}
	return syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
}
