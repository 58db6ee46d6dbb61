package partition

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition/blockdev"
)

// CreateTable writes the partition table of im's layout to d, a whole
// disk as [Config.List] (or [Config.Disk] for one path) described it, or a
// disk image file, and returns where each of im's files goes, in file
// order.
//
// Before writing it checks that d is not the boot medium, not in use and
// not read-only (as List found it; the exclusive open then makes the
// kernel refuse a disk mounted since) and large enough ([ErrTooSmall]);
// nothing is written otherwise. With Config.Discard it first discards the
// whole disk. It then writes and reads back the table ([WriteTable]).
//
// On a block device it makes the kernel see the new partitions: BLKRRPART
// first; if the kernel's partitions then differ from the table (a kernel
// without the GPT or MBR parser), it deletes them and adds the new ones
// with BLKPG, as partx does. It waits up to Config.NodeTimeout for the
// partitions' device nodes and returns them. A device that cannot be
// partitioned at all (a loop device attached without --partscan) gets
// places at offsets on the disk instead; use [OpenParts] for those.
func (c Config) CreateTable(ctx context.Context, log *slog.Logger, d Disk, im *imager.Image) ([]Place, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c = c.withDefaults()
	dev := d.Path
	switch {
	case d.Boot != "":
		return nil, fmt.Errorf("%w: %s is the medium the agent booted from (%s): it is never written; pick another disk", ErrBootMedium, dev, d.Boot)
	case d.InUse != "":
		return nil, fmt.Errorf("%w: %s is in use (%s): unmount or stop what holds it, or pick another disk", ErrInUse, dev, d.InUse)
	case d.ReadOnly:
		return nil, fmt.Errorf("%w: %s is read-only: check its write-protect switch or pick another disk", ErrReadOnly, dev)
	}
	fi, err := os.Stat(dev)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", dev, err)
	}
	block := blockdev.IsBlock(fi)
	if !block && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is neither a block device nor a regular file: name a whole disk", dev)
	}
	var sys string // the disk's sysfs directory
	if block {
		if sys, err = c.wholeDiskSys(fi, dev); err != nil {
			return nil, err
		}
	}
	var f *os.File
	if block {
		f, err = blockdev.OpenExclusive(dev)
	} else {
		f, err = os.OpenFile(dev, os.O_RDWR, 0)
	}
	if err != nil {
		if errors.Is(err, blockdev.ErrBusy) {
			return nil, fmt.Errorf("%w: open %s exclusively: a partition is mounted or held: unmount it first", ErrInUse, dev)
		}
		return nil, fmt.Errorf("open %s for writing: %w", dev, err)
	}
	defer f.Close()
	size, ss := fi.Size(), 512
	if block {
		if size, ss, err = blockdev.Geometry(f); err != nil {
			return nil, fmt.Errorf("size of %s: %w", dev, err)
		}
	}
	need, err := Need(im, ss)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", im.Name, err)
	}
	if size < need {
		return nil, tooSmall(dev, size, im.Name, need, "disk")
	}
	t, err := PlanTable(im.Layout, size, ss)
	if err != nil {
		return nil, fmt.Errorf("image %s on %s: %w", im.Name, dev, err)
	}
	if c.Discard && block {
		start := time.Now()
		if err := blockdev.Discard(f, 0, size); err != nil {
			log.Warn("cannot discard the disk; writing the table anyway", "disk", dev, "err", err)
		} else {
			log.Info("discarded the disk", "disk", dev, "size", bytesize.Format(size), "took", time.Since(start).Round(time.Millisecond))
		}
	}
	log.Info("writing partition table", "disk", dev, "table", t.Kind, "partitions", len(t.Partitions), "image", im.Name)
	if err := WriteTable(f, size, t); err != nil {
		return nil, fmt.Errorf("%s: %w", dev, err)
	}
	byNum := map[int]Partition{}
	for _, p := range t.Partitions {
		byNum[p.Number] = p
		log.Debug("partition", "disk", dev, "number", p.Number, "start", p.Start, "size", p.Size, "type", p.Type, "label", p.Label, "guid", p.GUID)
	}
	names := map[int]string{}
	if block {
		names, err = c.kernelPartitions(log, f, dev, sys, t)
		switch {
		case errors.Is(err, syscall.EINVAL):
			log.Warn("the kernel cannot partition this device; its partitions are addressed by offset", "disk", dev, "err", err)
			names = map[int]string{}
		case err != nil:
			return nil, err
		default:
			if err := c.waitNodes(ctx, sys, names); err != nil {
				return nil, err
			}
		}
	}
	var out []Place
	for _, file := range im.Files {
		p := byNum[file.Part.Number]
		if name, ok := names[p.Number]; ok {
			out = append(out, placeFor(file, p.Number, filepath.Join(c.Dev, name), 0, p.Size))
		} else {
			out = append(out, placeFor(file, p.Number, dev, p.Start, p.Size))
		}
	}
	return out, nil
}

// Disk describes the disk at path as [Config.List] would, for a caller
// that has a path rather than a listing: its sysfs facts and table, and
// whether it is the boot medium or in use. A regular file (a disk image)
// is a Disk of its size, read-write and free. A partition is an error: a
// partition table goes on the whole disk.
func (c Config) Disk(log *slog.Logger, path string) (Disk, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c = c.withDefaults()
	fi, err := os.Stat(path)
	if err != nil {
		return Disk{}, fmt.Errorf("target %s: %w", path, err)
	}
	switch {
	case fi.Mode().IsRegular():
		return Disk{Name: filepath.Base(path), Path: path, Size: fi.Size(), SectorSize: 512}, nil
	case !blockdev.IsBlock(fi):
		return Disk{}, fmt.Errorf("%s is neither a block device nor a regular file: name a whole disk", path)
	}
	sys, err := c.wholeDiskSys(fi, path)
	if err != nil {
		return Disk{}, err
	}
	d := c.disk(log, sys, filepath.Base(sys))
	d.Path = path
	c.markBusy(&d, sys, readMounts(c.Mounts, log))
	c.markBoot(&d)
	return d, nil
}

// wholeDiskSys is the sysfs directory of the whole disk at path; a
// partition is an error.
func (c Config) wholeDiskSys(fi os.FileInfo, path string) (string, error) {
	sys, err := c.sysDir(fi)
	if err != nil {
		return "", err
	}
	if n := readInt(sys, "partition"); n > 0 {
		return "", fmt.Errorf("%s is partition %d of a disk: a partition table goes on the whole disk", path, n)
	}
	return sys, nil
}

// sysDir returns the sysfs directory of a block device node.
func (c Config) sysDir(fi os.FileInfo) (string, error) {
	num, err := blockdev.DevNumber(fi)
	if err != nil {
		return "", err
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(c.Sys, "dev", "block", num))
	if err != nil {
		return "", fmt.Errorf("sysfs entry of block device %s: is sysfs mounted? %w", num, err)
	}
	return dir, nil
}

// kernelPartitions makes the kernel's partitions of the disk match t and
// returns their kernel names by number.
func (c Config) kernelPartitions(log *slog.Logger, f *os.File, dev, sys string, t *Table) (map[int]string, error) {
	match := func() (map[int]string, bool) {
		ks := sysPartitions(sys, c.Dev)
		if len(ks) != len(t.Partitions) {
			return nil, false
		}
		names := map[int]string{}
		for i, k := range ks {
			p := t.Partitions[i]
			if k.Number != p.Number || k.Start != p.Start || k.Size != p.Size {
				return nil, false
			}
			names[k.Number] = k.Name
		}
		return names, true
	}
	// udev's probe of the old partitions can hold them open for a moment,
	// and BLKRRPART fails with EBUSY while any partition is open.
	var err error
	for range 20 {
		if err = blockdev.RereadTable(f); !errors.Is(err, blockdev.ErrBusy) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err == nil {
		if names, ok := match(); ok {
			log.Info("the kernel re-read the partition table", "disk", dev)
			return names, nil
		}
		log.Info("the kernel found other partitions than were written (no parser for this table?); adding them with BLKPG", "disk", dev)
	} else {
		log.Info("BLKRRPART failed; adding the partitions with BLKPG", "disk", dev, "err", err)
	}
	for _, k := range sysPartitions(sys, c.Dev) {
		if err := blockdev.DeletePartition(f, k.Number); err != nil {
			if errors.Is(err, blockdev.ErrBusy) {
				return nil, fmt.Errorf("%w: the kernel's partition %s of %s is open: unmount it, then try again", ErrInUse, k.Name, dev)
			}
			return nil, fmt.Errorf("remove the kernel's partition %s of %s (BLKPG): %w", k.Name, dev, err)
		}
	}
	for _, p := range t.Partitions {
		if err := blockdev.AddPartition(f, p.Number, p.Start, p.Size); err != nil {
			return nil, fmt.Errorf("add partition %d of %s to the kernel (BLKPG): %w", p.Number, dev, err)
		}
	}
	if names, ok := match(); ok {
		return names, nil
	}
	return nil, fmt.Errorf("the kernel's partitions of %s do not match the table just written: run partx --update %s and check dmesg", dev, dev)
}

// waitNodes waits for each partition's device node to exist with the
// device number sysfs gives it: devtmpfs creates nodes as the kernel adds
// partitions; udev may replace them a moment later.
func (c Config) waitNodes(ctx context.Context, sys string, names map[int]string) error {
	deadline := time.Now().Add(c.NodeTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		missing := ""
		for _, name := range names {
			want := readString(filepath.Join(sys, name), "dev")
			fi, err := os.Stat(filepath.Join(c.Dev, name))
			if err != nil || fi.Mode()&fs.ModeDevice == 0 {
				missing = name
				break
			}
			if got, err := blockdev.DevNumber(fi); err != nil || got != want {
				missing = name
				break
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("partition node %s did not appear within %s: is devtmpfs mounted on %s (or udev running)?",
				filepath.Join(c.Dev, missing), c.NodeTimeout, c.Dev)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for partition node %s: %w", filepath.Join(c.Dev, missing), ctx.Err())
		case <-tick.C:
		}
	}
}
