package imager

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// seekData returns the first offset at or after off that holds data
// (lseek SEEK_DATA), or end when only a hole follows. A file system or
// device without hole support reports off itself: all data.
func seekData(f *os.File, off, end int64) (int64, error) {
	n, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return end, nil
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
		return off, nil
	case err != nil:
		return 0, err
	}
	return min(n, end), nil
}

// seekHole returns the first offset at or after off inside a hole (lseek
// SEEK_HOLE; the end of a file counts as one), or end.
func seekHole(f *os.File, off, end int64) (int64, error) {
	n, err := unix.Seek(int(f.Fd()), off, unix.SEEK_HOLE)
	switch {
	case errors.Is(err, unix.ENXIO):
		return end, nil
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
		return end, nil
	case err != nil:
		return 0, err
	}
	return min(n, end), nil
}

// punchHole deallocates [off, off+n) of the regular file f, keeping its
// size: the range reads as zeros afterwards.
func punchHole(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = fmt.Errorf("the filesystem holding it cannot punch holes (%w): leave out --sparse, or keep images on ext4, XFS or btrfs", err)
	}
	return err
}

// allocated is the bytes the file system has allocated to f (st_blocks).
func allocated(f *os.File) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}
