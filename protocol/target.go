package protocol

import (
	"fmt"
	"strings"
)

// FirstDisk is the Target.Disk that means "the first disk that can be a
// target": fixed, not the boot medium, writable and free (package
// partition says exactly which).
const FirstDisk = "first"

// Target selects where an image goes on a machine. Set exactly one of
// Disk, Label and GUID; Partition goes with Disk. The same rules hold in
// a plan, a task, a site config and on a rescue stick: see [Target.Check].
type Target struct {
	// Disk is a whole disk: [FirstDisk], or a kernel device name such as
	// "vda", "sda" or "nvme0n1" (the agent also accepts "/dev/" in front).
	Disk string `json:"disk,omitempty"`
	// Partition is a partition number (1–128) on Disk.
	Partition int `json:"partition,omitempty"`
	// Label is a GPT partition name (at most 36 characters), matched
	// exactly, on any disk that is not the boot medium.
	Label string `json:"label,omitempty"`
	// GUID is a GPT unique partition GUID (8-4-4-4-12 hex digits, any
	// case) on any disk that is not the boot medium.
	GUID string `json:"guid,omitempty"`
}

// Check says whether the target is well formed: exactly one of Disk,
// Label and GUID, Partition only beside Disk and from 1 to 128, Disk
// "first" or a device name, Label a GPT name, GUID a GUID. The error says
// what to set instead.
func (t Target) Check() error {
	n := 0
	for _, set := range []bool{t.Disk != "", t.Label != "", t.GUID != ""} {
		if set {
			n++
		}
	}
	switch {
	case n != 1 || (t.Partition != 0 && t.Disk == ""):
		return fmt.Errorf("target %s: set exactly one of disk, label or guid (partition goes with disk)", t)
	case t.Disk != "" && t.Disk != FirstDisk && !deviceName(strings.TrimPrefix(t.Disk, "/dev/")):
		return fmt.Errorf("target disk %q: want %q or a device name such as vda, sda or nvme0n1", Clip(t.Disk, 40), FirstDisk)
	case t.Partition < 0 || t.Partition > 128:
		return fmt.Errorf("target partition %d: want a partition number from 1 to 128", t.Partition)
	case len(t.Label) > 36:
		return fmt.Errorf("target label %q: a GPT partition name has at most 36 characters", Clip(t.Label, 40))
	case t.GUID != "" && !IsGUID(t.GUID):
		return fmt.Errorf("target guid %q: want a GPT partition GUID such as 0fc63daf-8483-4772-8e79-3d69d8477de4", Clip(t.GUID, 40))
	}
	return nil
}

func (t Target) String() string {
	var parts []string
	if t.Disk != "" {
		parts = append(parts, "disk="+t.Disk)
	}
	if t.Partition != 0 {
		parts = append(parts, fmt.Sprintf("partition=%d", t.Partition))
	}
	if t.Label != "" {
		parts = append(parts, fmt.Sprintf("label=%q", t.Label))
	}
	if t.GUID != "" {
		parts = append(parts, "guid="+t.GUID)
	}
	if len(parts) == 0 {
		return "(empty target)"
	}
	return strings.Join(parts, " ")
}

// deviceName accepts kernel block device names (vda, sda, nvme0n1,
// mmcblk0, md127).
func deviceName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// IsGUID reports whether s is a GUID written as 8-4-4-4-12 hex digits
// (either case), as PARTUUIDs and GPT GUIDs are.
func IsGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}
