package imager

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// blockSize asks the kernel for a block device's size in bytes
// (BLKGETSIZE64, linux/fs.h).
func blockSize(f *os.File) (int64, error) {
	var size uint64
	conn, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var errno unix.Errno
	err = conn.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return int64(size), nil
}

// partitionOf reports the kernel's partition number and start offset (in
// bytes) for a partition block device, from /sys/dev/block/MAJ:MIN. It
// returns zeros for whole disks and regular files.
func partitionOf(d *Device) (number int, start int64) {
	if !d.Block {
		return 0, 0
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return 0, 0
	}
	dir := fmt.Sprintf("/sys/dev/block/%d:%d/", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	read := func(name string) int64 {
		b, err := os.ReadFile(dir + name)
		if err != nil {
			return 0
		}
		v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return v
	}
	// sysfs "start" is in 512-byte sectors whatever the logical block size.
	return int(read("partition")), read("start") * 512
}

// notSentLowat is the unsent bytes a peer socket may queue in the kernel:
// a few 64 KiB chunks. See socket.go.
const notSentLowat = 256 << 10

func setNotSentLowat(fd uintptr) {
	unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
}
