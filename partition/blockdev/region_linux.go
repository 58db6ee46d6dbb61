package blockdev

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errNotSupported marks an answer that means "this device or filesystem
// has no such operation", as opposed to one that failed.
var errNotSupported = errors.New("not supported")

func notSupported(err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("%w (%v)", errNotSupported, err)
	}
	return err
}

// zeroOut zeroes a sector-aligned byte range of a block device
// (BLKZEROOUT, linux/fs.h): the kernel uses the device's WRITE ZEROES
// where it has one and writes zero pages where not, and drops the range
// from the page cache.
func zeroOut(f *os.File, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	return notSupported(ioctl(f, unix.BLKZEROOUT, unsafe.Pointer(&r)))
}

// discardRange is Discard, with "the device cannot" told apart.
func discardRange(f *os.File, off, n int64) error { return notSupported(Discard(f, off, n)) }

// punchHole frees a byte range of a regular file, which then reads zero
// (fallocate FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE; the filesystem
// zeroes partial blocks at the ends).
func punchHole(f *os.File, off, n int64) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := conn.Control(func(fd uintptr) {
		ferr = unix.Fallocate(int(fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}); err != nil {
		return err
	}
	return notSupported(ferr)
}

// discardMax is the most bytes the device of block device f discards in
// one request, from /sys/dev/block/MAJ:MIN/queue/discard_max_bytes: 0
// when it cannot discard. A partition has no queue of its own; its disk's
// (the sysfs folder above it) is read.
func discardMax(f *os.File) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	dir := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	if _, err := os.Stat(dir + "/partition"); err == nil {
		// The kernel follows the MAJ:MIN link before "..": the disk's
		// folder. (filepath.Join would drop both lexically.)
		dir += "/.."
	}
	b, err := os.ReadFile(dir + "/queue/discard_max_bytes")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s/queue/discard_max_bytes: %w", dir, err)
	}
	return n, nil
}
