package imager

import (
	"golang.org/x/sys/unix"
)

// notSentLowat is the unsent bytes a peer socket may queue in the kernel:
// a few 64 KiB chunks. See socket.go.
const notSentLowat = 256 << 10

func setNotSentLowat(fd uintptr) {
	unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
}
