package imager

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition/blockdev"
)

// Device is an opened source or target: a regular file, a whole block
// device or a partition (package blockdev sizes and opens them).
type Device = blockdev.Device

// OpenSource opens path read-only for hashing or seeding.
func OpenSource(path string) (*Device, error) {
	d, err := blockdev.Open(path, false)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("source %s does not exist: check the path, or list block devices with lsblk: %w", path, err)
	case err != nil:
		return nil, fmt.Errorf("open source %s: %w", path, err)
	}
	return d, nil
}

// OpenTarget opens path for writing an image part of length bytes. A
// missing or empty regular file is created and sized; an existing file or
// block device must already hold at least length bytes, or the error wraps
// [ErrTooSmall]. A larger target is written from its start and the rest is
// left alone, as on a disk. Block devices are opened exclusively (O_EXCL), so a mounted
// or busy disk is refused by the kernel instead of being overwritten under a
// running system. Nothing is written here.
func OpenTarget(path string, length int64) (*Device, error) {
	_, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, fmt.Errorf("create target %s: check that its folder exists and is writable: %w", path, err)
		}
		if err := f.Truncate(length); err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("size new target %s to %s: %w", path, bytesize.Format(length), err)
		}
		return &Device{File: f, Path: path, Size: length}, nil
	case err != nil:
		return nil, fmt.Errorf("target %s: %w", path, err)
	}
	d, err := blockdev.Open(path, true)
	if err != nil {
		return nil, fmt.Errorf("open target %s for writing (is it mounted or in use?): %w", path, err)
	}
	if !d.Block && d.Size == 0 {
		// An empty file (touch target.img) is sized like a new one.
		if err := d.Truncate(length); err != nil {
			d.Close()
			return nil, fmt.Errorf("size target %s to %s: %w", path, bytesize.Format(length), err)
		}
		d.Size = length
	}
	if err := fits(d, length); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// fits reports, wrapping ErrTooSmall, whether d can hold length bytes.
func fits(d *Device, length int64) error {
	if d.Size < length {
		return fmt.Errorf("%w: target %s (%s) is smaller than its image part (%s): pick a larger disk or partition",
			ErrTooSmall, d.Path, bytesize.Format(d.Size), bytesize.Format(length))
	}
	return nil
}
