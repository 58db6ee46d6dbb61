package blockdev

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl runs one ioctl on f's descriptor.
func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := conn.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// Geometry returns a block device's size in bytes (BLKGETSIZE64) and
// logical sector size (BLKSSZGET), both from linux/fs.h.
func Geometry(f *os.File) (int64, int, error) {
	var size uint64
	if err := ioctl(f, unix.BLKGETSIZE64, unsafe.Pointer(&size)); err != nil {
		return 0, 0, fmt.Errorf("BLKGETSIZE64: %w", err)
	}
	var ss int32
	if err := ioctl(f, unix.BLKSSZGET, unsafe.Pointer(&ss)); err != nil {
		return 0, 0, fmt.Errorf("BLKSSZGET: %w", err)
	}
	return int64(size), int(ss), nil
}

// RereadTable asks the kernel to drop the disk's partitions and parse the
// table again (BLKRRPART). It fails with EBUSY while a partition is open
// or mounted, and with EINVAL on a device that cannot be partitioned (a
// loop device attached without --partscan).
func RereadTable(f *os.File) error {
	return ioctl(f, unix.BLKRRPART, nil)
}

// blkpg adds or deletes one partition in the kernel's view without
// parsing any table, as partx does: the way to get partition devices from
// a kernel built without the GPT or MBR parser (CONFIG_EFI_PARTITION,
// CONFIG_MSDOS_PARTITION).
func blkpg(f *os.File, op int32, number int, start, length int64) error {
	p := unix.BlkpgPartition{Start: start, Length: length, Pno: int32(number)}
	arg := unix.BlkpgIoctlArg{Op: op, Datalen: int32(unsafe.Sizeof(p)), Data: (*byte)(unsafe.Pointer(&p))}
	return ioctl(f, unix.BLKPG, unsafe.Pointer(&arg))
}

// AddPartition adds partition number (start and length in bytes) to the
// kernel's view of the disk (BLKPG_ADD_PARTITION).
func AddPartition(f *os.File, number int, start, length int64) error {
	return blkpg(f, unix.BLKPG_ADD_PARTITION, number, start, length)
}

// DeletePartition drops partition number from the kernel's view of the
// disk (BLKPG_DEL_PARTITION).
func DeletePartition(f *os.File, number int) error {
	return blkpg(f, unix.BLKPG_DEL_PARTITION, number, 0, 0)
}

// Discard tells the device that a byte range holds nothing (BLKDISCARD):
// TRIM on an SSD, a punched hole under a loop device.
func Discard(f *os.File, off, length int64) error {
	r := [2]uint64{uint64(off), uint64(length)}
	return ioctl(f, unix.BLKDISCARD, unsafe.Pointer(&r))
}

// DevNumber returns the major:minor of a device node, as sysfs spells it.
func DevNumber(fi os.FileInfo) (string, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("%s: no device number", fi.Name())
	}
	return fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))), nil
}

// OpenExclusive opens a block device for writing with O_EXCL: the kernel
// refuses it while a partition is mounted or held, so a disk in use is
// never repartitioned under a running system.
func OpenExclusive(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
}

// ErrBusy is the kernel's answer to an exclusive open, a BLKRRPART or a
// BLKPG on a device that is mounted or held.
var ErrBusy = unix.EBUSY

// PartitionOf reports the kernel's partition number and start offset (in
// bytes) for a partition block device, from /sys/dev/block/MAJ:MIN. It
// returns zeros for whole disks and regular files.
func PartitionOf(f *os.File) (number int, start int64) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
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

// DropCache asks the kernel to forget the clean cached pages of f's byte
// range (POSIX_FADV_DONTNEED), so that reading it back reads the disk,
// not memory. Pages must be written back first (sync).
func DropCache(f *os.File, off, n int64) error {
	return unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}

// RereadTablePath makes the kernel parse the table of the disk at path
// again (BLKRRPART), as after a whole-disk image that carries its own
// table. It retries for a moment while a partition is still held (EBUSY,
// for example udev probing it). A regular file (a disk image) needs
// nothing; a device that cannot be partitioned (EINVAL: a loop device
// without partscan) is not an error.
func RereadTablePath(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for range 20 {
		err := RereadTable(f)
		switch {
		case err == nil, errors.Is(err, unix.EINVAL):
			return nil
		case !errors.Is(err, unix.EBUSY):
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return unix.EBUSY
}
