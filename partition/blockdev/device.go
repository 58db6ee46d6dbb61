package blockdev

import (
	"fmt"
	"io/fs"
	"os"
)

// Device is an open regular file, whole block device or partition, with
// its size: from the kernel for a block device, from stat for a file.
type Device struct {
	*os.File
	Path  string
	Size  int64
	Block bool // a block device rather than a regular file
}

// Open opens path read-only, or for writing (O_RDWR, and O_EXCL on a block
// device: the kernel refuses a mounted or held disk, [ErrBusy]), and
// sizes it. Anything but a regular file or a block device is an error.
func Open(path string, write bool) (*Device, error) {
	var f *os.File
	var err error
	switch {
	case !write:
		f, err = os.Open(path)
	default:
		var st os.FileInfo
		if st, err = os.Stat(path); err == nil {
			if IsBlock(st) {
				f, err = OpenExclusive(path)
			} else {
				f, err = os.OpenFile(path, os.O_RDWR, 0)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	d, err := Describe(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// Describe sizes an open file or block device.
func Describe(f *os.File, path string) (*Device, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	d := &Device{File: f, Path: path}
	switch {
	case st.Mode().IsRegular():
		d.Size = st.Size()
	case IsBlock(st):
		d.Block = true
		if d.Size, _, err = Geometry(f); err != nil {
			return nil, fmt.Errorf("size of block device %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("%s is neither a regular file nor a block device (mode %s): pass an image file, a disk or a partition", path, st.Mode())
	}
	return d, nil
}

// IsBlock reports whether st is a block device node.
func IsBlock(st os.FileInfo) bool {
	return st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0
}

// Region is the whole of the device as a [Region].
func (d *Device) Region() Region {
	return Region{File: d.File, Size: d.Size, Block: d.Block}
}
