package partition

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition/blockdev"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// Target is the disk, or the partition of a disk, an image goes to.
type Target struct {
	Disk Disk
	Part *Partition // nil: the whole disk
}

// Path is the device node to open: the partition's if it has one, else
// the disk's.
func (t Target) Path() string {
	if t.Part != nil && t.Part.Path != "" {
		return t.Part.Path
	}
	return t.Disk.Path
}

// Size is the bytes of the partition or the whole disk.
func (t Target) Size() int64 {
	if t.Part != nil {
		return t.Part.Size
	}
	return t.Disk.Size
}

func (t Target) String() string {
	switch {
	case t.Part == nil:
		return t.Disk.Path
	case t.Part.Path != "":
		return t.Part.Path
	}
	return fmt.Sprintf("partition %d of %s", t.Part.Number, t.Disk.Path)
}

// Choose picks the target sel names among disks (as [Config.List] returns
// them) and checks that it can take im.
//
//   - Disk "first" is the first disk, in name order, that is not
//     removable, not on a USB bus, not the boot medium, not read-only, not
//     in use and has a medium. If it is too small, that is an error: Choose does not go on
//     to a disk the plan's author may not expect to be written.
//   - Disk by name must exist and must not be the boot medium (an error
//     saying so, [ErrBootMedium]), read-only ([ErrReadOnly]) or in use
//     ([ErrInUse]). A removable disk named explicitly is fine.
//   - Disk with Partition is that partition of the disk.
//   - Label and GUID match partitions on every disk; matches on the boot
//     medium are ignored, and more than one match is [ErrAmbiguous].
//
// sel must pass protocol.Target.Check (else [ErrNoTarget]).
//
// With im nil, Choose selects a disk to read (a capture's golden disk):
// the same rules without the size check.
//
// The target must hold the image ([Need]), or for a partition target the
// image's one part and its partition size in the layout; otherwise the
// error wraps [ErrTooSmall]. Nothing matching is [ErrNoTarget], with the
// disks that were seen.
func Choose(disks []Disk, sel protocol.Target, im *imager.Image) (Target, error) {
	if err := sel.Check(); err != nil {
		return Target{}, fmt.Errorf("%w: %w", ErrNoTarget, err)
	}
	disks = byName(disks)
	var t Target
	var err error
	if sel.Disk != "" {
		t, err = chooseDisk(disks, sel)
	} else {
		t, err = choosePartition(disks, sel)
	}
	if err != nil {
		return Target{}, err
	}
	if err := fits(t, im); err != nil {
		return Target{}, err
	}
	return t, nil
}

// Candidates returns, in name order, the whole disks that can take im
// and that disk "first" would consider: fixed, not the boot medium,
// writable, free and with a medium. Disk "first" is the first disk that passes
// those tests, whether it fits or not; when a person may choose (the
// rescue stick's menu) these are the choices.
func Candidates(disks []Disk, im *imager.Image) []Target {
	var out []Target
	for _, d := range byName(disks) {
		t := Target{Disk: d}
		if firstCandidate(d) && fits(t, im) == nil {
			out = append(out, t)
		}
	}
	return out
}

// firstCandidate: a disk "first" may pick. A USB disk never is, even a
// fixed one: an admin's backup drive left plugged in must be named to be
// written.
func firstCandidate(d Disk) bool {
	return !d.Removable && !d.USB && d.Boot == "" && !d.ReadOnly && d.InUse == "" && d.Size > 0
}

// byName returns a copy of disks sorted by kernel name (sda < sdb < sdaa).
func byName(disks []Disk) []Disk {
	disks = slices.Clone(disks)
	slices.SortStableFunc(disks, compareName)
	return disks
}

func chooseDisk(disks []Disk, sel protocol.Target) (Target, error) {
	var d *Disk
	if sel.Disk == protocol.FirstDisk {
		for i := range disks {
			if firstCandidate(disks[i]) {
				d = &disks[i]
				break
			}
		}
		if d == nil {
			return Target{}, fmt.Errorf("%w: target %s: no disk is fixed, internal (not USB), writable, free and not the boot medium; saw %s: attach a disk or name one in the plan (a USB disk must be named)",
				ErrNoTarget, sel, seen(disks))
		}
	} else {
		name := strings.TrimPrefix(sel.Disk, "/dev/")
		for i := range disks {
			if disks[i].Name == name {
				d = &disks[i]
			}
		}
		if d == nil {
			hint := ""
			for _, c := range disks {
				for _, p := range c.Partitions {
					if p.Name == name {
						hint = fmt.Sprintf(" (%s is partition %d of %s: select disk %s and partition %d)", name, p.Number, c.Name, c.Name, p.Number)
					}
				}
			}
			return Target{}, fmt.Errorf("%w: target %s: there is no disk %s%s; saw %s: check the plan's disk name", ErrNoTarget, sel, name, hint, seen(disks))
		}
		switch {
		case d.Boot != "":
			return Target{}, fmt.Errorf("%w: %s is the medium the agent booted from (%s): it is never written; pick another disk",
				ErrBootMedium, d.Path, d.Boot)
		case d.ReadOnly:
			return Target{}, fmt.Errorf("%w: %s is read-only: check its write-protect switch or pick another disk", ErrReadOnly, d.Path)
		case d.InUse != "" && sel.Partition == 0:
			return Target{}, fmt.Errorf("%w: %s is in use (%s): unmount or stop what holds it, or pick another disk", ErrInUse, d.Path, d.InUse)
		case d.Size == 0:
			return Target{}, fmt.Errorf("%w: %s has no medium: insert one or pick another disk", ErrNoTarget, d.Path)
		}
	}
	if sel.Partition == 0 {
		return Target{Disk: *d}, nil
	}
	for i := range d.Partitions {
		if d.Partitions[i].Number == sel.Partition {
			p := d.Partitions[i]
			t := Target{Disk: *d, Part: &p}
			if p.InUse != "" {
				return Target{}, fmt.Errorf("%w: %s is in use (%s): unmount or stop what holds it, or pick another partition", ErrInUse, t, p.InUse)
			}
			return t, nil
		}
	}
	var have []string
	for _, p := range d.Partitions {
		have = append(have, fmt.Sprint(p.Number))
	}
	return Target{}, fmt.Errorf("%w: target %s: %s has no partition %d (it has %s): create the table first or pick another partition",
		ErrNoTarget, sel, d.Path, sel.Partition, orNone(strings.Join(have, ", ")))
}

func choosePartition(disks []Disk, sel protocol.Target) (Target, error) {
	want := normGUID(sel.GUID)
	var matches, onBoot []Target
	for _, d := range disks {
		for _, p := range d.Partitions {
			ok := (sel.Label != "" && p.Label == sel.Label) ||
				(want != "" && normGUID(p.GUID) == want)
			if !ok {
				continue
			}
			t := Target{Disk: d, Part: &p}
			if d.Boot != "" {
				onBoot = append(onBoot, t)
			} else {
				matches = append(matches, t)
			}
		}
	}
	switch {
	case len(matches) == 0 && len(onBoot) > 0:
		return Target{}, fmt.Errorf("%w: target %s is %s on %s, the medium the agent booted from (%s): it is never written; pick another partition",
			ErrBootMedium, sel, onBoot[0], onBoot[0].Disk.Path, onBoot[0].Disk.Boot)
	case len(matches) == 0:
		return Target{}, fmt.Errorf("%w: no partition matches target %s; saw %s: check the plan or create the partition table first",
			ErrNoTarget, sel, seen(disks))
	case len(matches) > 1:
		var names []string
		for _, m := range matches {
			names = append(names, m.String())
		}
		return Target{}, fmt.Errorf("%w: target %s matches %s: select by disk and partition, or give the partitions distinct labels",
			ErrAmbiguous, sel, strings.Join(names, ", "))
	}
	t := matches[0]
	switch {
	case t.Disk.ReadOnly:
		return Target{}, fmt.Errorf("%w: %s is on read-only %s: check its write-protect switch or pick another partition", ErrReadOnly, t, t.Disk.Path)
	case t.Part.InUse != "":
		return Target{}, fmt.Errorf("%w: %s is in use (%s): unmount or stop what holds it, or pick another partition", ErrInUse, t, t.Part.InUse)
	}
	return t, nil
}

// normGUID upper-cases a GUID and drops braces, for comparing.
func normGUID(s string) string {
	return strings.ToUpper(strings.Trim(strings.TrimSpace(s), "{}"))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// seen lists disks for an error message.
func seen(disks []Disk) string {
	if len(disks) == 0 {
		return "no disks at all (are the disk drivers loaded?)"
	}
	var out []string
	for _, d := range disks {
		s := d.String()
		var labels []string
		for _, p := range d.Partitions {
			if p.Label != "" {
				labels = append(labels, fmt.Sprintf("%d=%q", p.Number, p.Label))
			}
		}
		if len(labels) > 0 {
			s += " partitions " + strings.Join(labels, " ")
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

// fits checks that t can hold im.
func fits(t Target, im *imager.Image) error {
	if im == nil { // a source (capture), not a target
		return nil
	}
	if t.Part != nil {
		if len(im.Files) != 1 {
			return fmt.Errorf("%w: image %s has %d parts, but %s is one partition: select a disk", ErrLayout, im.Name, len(im.Files), t)
		}
		if need := partNeed(im.Files[0]); t.Part.Size < need {
			return tooSmall(t.String(), t.Part.Size, im.Name, need, "partition")
		}
		return nil
	}
	need, err := Need(im, t.Disk.SectorSize)
	if err != nil {
		return fmt.Errorf("image %s: %w", im.Name, err)
	}
	if t.Disk.Size < need {
		return tooSmall(t.Disk.Path, t.Disk.Size, im.Name, need, "disk")
	}
	return nil
}

func tooSmall(what string, have int64, image string, need int64, kind string) error {
	return fmt.Errorf("%w: target %s (%s) is smaller than image %s (%s): pick a larger %s or a smaller image",
		ErrTooSmall, what, bytesize.Format(have), image, bytesize.Format(need), kind)
}

// Place is where one image file goes.
type Place struct {
	Number int // partition number, 0 for the whole disk
	// Path is the partition's device node, or the disk (or disk image
	// file) that holds the partition when it has no node.
	Path string
	// Offset is where the partition starts in Path: 0 for a device node.
	Offset int64
	Size   int64 // bytes of the partition: the room the file has
	Length int64 // bytes of the image file written there
	// Extents are where the file's bytes go in a used-block image
	// (imager.OnExtents); none: from the partition's first byte on.
	Extents imager.Extents
}

// placeFor is where file f goes: partition number, in path at off, with
// size bytes of room.
func placeFor(f imager.File, number int, path string, off, size int64) Place {
	return Place{Number: number, Path: path, Offset: off, Size: size, Length: f.Length, Extents: f.Part.Extents}
}

// need is the room the place's file takes: the whole filesystem for a
// used-block file.
func (p Place) need() int64 {
	if len(p.Extents) > 0 {
		return p.Extents[len(p.Extents)-1].End()
	}
	return p.Length
}

func (p Place) String() string {
	if p.Offset == 0 {
		return p.Path
	}
	return fmt.Sprintf("%s at %s", p.Path, bytesize.Format(p.Offset))
}

// placeOn addresses partition p of disk d for file f.
func placeOn(d Disk, p Partition, f imager.File) Place {
	if p.Path != "" {
		return placeFor(f, p.Number, p.Path, 0, p.Size)
	}
	return placeFor(f, p.Number, d.Path, p.Start, p.Size)
}

// Map returns where each of im's files goes on t, in file order, using the
// partitions t's disk has now. (After [Config.CreateTable], use the places
// it returns.) A partition target takes a one-part image; a whole-disk
// image goes to the disk; partition images go to the disk's partitions of
// the same numbers, which must exist, be free and be large enough.
func Map(t Target, im *imager.Image) ([]Place, error) {
	if err := fits(t, im); err != nil {
		return nil, err
	}
	if t.Part != nil {
		return []Place{placeOn(t.Disk, *t.Part, im.Files[0])}, nil
	}
	var out []Place
	for _, f := range im.Files {
		n := f.Part.Number
		if n == 0 {
			if len(im.Files) != 1 {
				return nil, fmt.Errorf("%w: image %s has a whole-disk part %s among %d parts: rebuild the image", ErrLayout, im.Name, f.Path, len(im.Files))
			}
			return []Place{placeFor(f, 0, t.Disk.Path, 0, t.Disk.Size)}, nil
		}
		i := slices.IndexFunc(t.Disk.Partitions, func(p Partition) bool { return p.Number == n })
		if i < 0 {
			return nil, fmt.Errorf("%w: %s has no partition %d for part %s of image %s: let the plan create the partition table, or pick a disk laid out for this image",
				ErrNoTarget, t.Disk.Path, n, f.Path, im.Name)
		}
		p := t.Disk.Partitions[i]
		if p.InUse != "" {
			return nil, fmt.Errorf("%w: partition %d of %s is in use (%s): unmount it or pick another disk", ErrInUse, n, t.Disk.Path, p.InUse)
		}
		if need := partNeed(f); p.Size < need {
			return nil, tooSmall(placeOn(t.Disk, p, f).String(), p.Size, im.Name+" part "+f.Path, need, "partition (or let the plan create the table)")
		}
		out = append(out, placeOn(t.Disk, p, f))
	}
	return out, nil
}

// Paths returns the places as imager.Config.Paths, one per image file.
// That needs a device node per partition; when a place is an offset into a
// disk or image file, use [OpenParts] instead.
func Paths(places []Place) ([]string, error) {
	var out []string
	for _, p := range places {
		if p.Offset != 0 {
			return nil, fmt.Errorf("partition %d has no device node, only an offset in %s: open the places with OpenParts", p.Number, p.Path)
		}
		out = append(out, p.Path)
	}
	return out, nil
}

// OpenParts opens the places for writing and returns them as
// imager.Config.Parts. Each part is a window on its device: reads and
// writes are offset by the partition's start and refused past its end, so
// a part never spills into its neighbour. Block devices are opened with
// O_EXCL (the kernel refuses a mounted or held device); a device shared by
// several places is opened once. Each part's RW also has DropCache, which
// forgets the partition's cached pages so a read-back reads the disk,
// and Region, through which imager.FinishGaps reaches a used-block
// part's gaps. closeAll flushes and closes them all; call it once the imager session
// is done.
func OpenParts(places []Place) (parts []imager.Part, closeAll func() error, err error) {
	files := map[string]*os.File{}
	blocks := map[*os.File]bool{}
	var order []*os.File
	closeFiles := func() error {
		var errs []error
		for _, f := range order {
			if err := f.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("flush %s: %w", f.Name(), err))
			}
			errs = append(errs, f.Close())
		}
		order = nil
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			closeFiles()
		}
	}()
	for _, pl := range places {
		f, ok := files[pl.Path]
		if !ok {
			fi, err := os.Stat(pl.Path)
			if err != nil {
				return nil, nil, fmt.Errorf("target %s: %w", pl.Path, err)
			}
			block := blockdev.IsBlock(fi)
			switch {
			case block:
				f, err = blockdev.OpenExclusive(pl.Path)
			case fi.Mode().IsRegular():
				f, err = os.OpenFile(pl.Path, os.O_RDWR, 0)
			default:
				err = fmt.Errorf("%s is neither a block device nor a regular file", pl.Path)
			}
			if err != nil {
				if errors.Is(err, blockdev.ErrBusy) {
					return nil, nil, fmt.Errorf("%w: open %s: it is mounted or held: unmount it first", ErrInUse, pl.Path)
				}
				return nil, nil, fmt.Errorf("open target %s for writing: %w", pl.Path, err)
			}
			files[pl.Path] = f
			blocks[f] = block
			order = append(order, f)
			size := fi.Size()
			if block {
				if size, _, err = blockdev.Geometry(f); err != nil {
					return nil, nil, fmt.Errorf("size of %s: %w", pl.Path, err)
				}
			}
			for _, other := range places {
				if other.Path == pl.Path && (other.Offset < 0 || other.Size < other.need() || other.Offset > size-other.Size) {
					return nil, nil, fmt.Errorf("%w: %s (%s) cannot hold partition %d (%s at %s)",
						ErrTooSmall, pl.Path, bytesize.Format(size), other.Number, bytesize.Format(other.Size), bytesize.Format(other.Offset))
				}
			}
		}
		parts = append(parts, imager.Part{RW: imager.OnExtents(&window{f: f, off: pl.Offset, size: pl.Size, block: blocks[f]}, pl.Extents), Length: pl.Length})
	}
	return parts, closeFiles, nil
}

// window is one partition of an open device.
type window struct {
	f         *os.File
	off, size int64
	block     bool // f is a block device
}

// Region is the window as a blockdev.Region: what imager.FinishGaps
// zeroes or discards the gaps of a used-block part through.
func (w *window) Region() blockdev.Region {
	return blockdev.Region{File: w.f, Off: w.off, Size: w.size, Block: w.block}
}

func (w *window) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	if off >= w.size {
		return 0, io.EOF
	}
	short := int64(len(b)) > w.size-off
	if short {
		b = b[:w.size-off]
	}
	n, err := w.f.ReadAt(b, w.off+off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

func (w *window) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off > w.size || int64(len(b)) > w.size-off {
		return 0, fmt.Errorf("write of %d bytes at %d is outside the %d-byte partition at %d of %s", len(b), off, w.size, w.off, w.f.Name())
	}
	return w.f.WriteAt(b, w.off+off)
}

// Sync flushes the device under the window.
func (w *window) Sync() error { return w.f.Sync() }

// DropCache drops the window's clean pages from the page cache, so that
// the next read comes from the disk (a read-back after writing).
func (w *window) DropCache() error { return blockdev.DropCache(w.f, w.off, w.size) }
