package partition

import (
	"fmt"
	"os"
	"syscall"
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

// geometry returns a block device's size in bytes (BLKGETSIZE64) and
// logical sector size (BLKSSZGET), both from linux/fs.h.
func geometry(f *os.File) (int64, int, error) {
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

// rereadTable asks the kernel to drop the disk's partitions and parse the
// table again (BLKRRPART). It fails with EBUSY while a partition is open
// or mounted, and with EINVAL on a device that cannot be partitioned (a
// loop device attached without --partscan).
func rereadTable(f *os.File) error {
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

func addPartition(f *os.File, number int, start, length int64) error {
	return blkpg(f, unix.BLKPG_ADD_PARTITION, number, start, length)
}

func deletePartition(f *os.File, number int) error {
	return blkpg(f, unix.BLKPG_DEL_PARTITION, number, 0, 0)
}

// discard tells the device that a byte range holds nothing (BLKDISCARD):
// TRIM on an SSD, a punched hole under a loop device.
func discard(f *os.File, off, length int64) error {
	r := [2]uint64{uint64(off), uint64(length)}
	return ioctl(f, unix.BLKDISCARD, unsafe.Pointer(&r))
}

// devNumber returns the major:minor of a device node, as sysfs spells it.
func devNumber(fi os.FileInfo) (string, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("%s: no device number", fi.Name())
	}
	return fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))), nil
}

// openExclusive opens a block device for writing with O_EXCL: the kernel
// refuses it while a partition is mounted or held, so a disk in use is
// never repartitioned under a running system.
func openExclusive(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
}

var errBusy = unix.EBUSY
