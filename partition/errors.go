package partition

import (
	"errors"

	"github.com/pxeswarm/pxeswarm/imager"
)

// Sentinel errors that callers branch on. Every error that carries one of
// these also says what to do next.
var (
	// ErrNoTarget: nothing matches the selector (or a part of the image has
	// no partition to go to). The message lists the disks that were seen.
	ErrNoTarget = errors.New("no target disk")
	// ErrTooSmall: the target holds fewer bytes than the image, or than a
	// partition of its layout. It is imager.ErrTooSmall, so one errors.Is
	// covers a refusal from either package.
	ErrTooSmall = imager.ErrTooSmall
	// ErrBootMedium: the selector names the medium the agent booted from.
	ErrBootMedium = errors.New("target is the boot medium")
	// ErrAmbiguous: a label, GUID or partition number matches on more than
	// one disk. The message lists the matches.
	ErrAmbiguous = errors.New("ambiguous target")
	// ErrReadOnly: the selected disk is read-only.
	ErrReadOnly = errors.New("target is read-only")
	// ErrInUse: the selected disk or partition is mounted or held by
	// another device (LVM, RAID, dm-crypt).
	ErrInUse = errors.New("target is in use")
	// ErrLayout: the image's layout cannot be laid out as a partition table
	// (overlapping partitions, an MBR with more than four, an unaligned
	// start, a bad type or GUID), or the image does not fit the kind of
	// target selected.
	ErrLayout = errors.New("bad partition layout")
	// ErrNoTable: the disk holds no partition table go-diskfs can read
	// (blank, a whole-disk filesystem, or a damaged table).
	ErrNoTable = errors.New("no partition table")
)
