// Package partitiontest makes fake machines for tests: a sysfs tree, a
// device folder of sparse disk image files and a mount table, which
// partition.Config reads as it reads a real machine.
package partitiontest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/partition"
)

// Machine returns a partition.Config over an empty fake machine in
// t.TempDir(): a sysfs tree (Sys), a device folder of sparse image files
// (Dev) and an empty mount table. Add disks with [AddDisk].
func Machine(t testing.TB) partition.Config {
	t.Helper()
	dir := t.TempDir()
	c := partition.Config{
		Sys:    filepath.Join(dir, "sys"),
		Dev:    filepath.Join(dir, "dev"),
		Mounts: filepath.Join(dir, "mounts"),
	}
	for _, d := range []string{filepath.Join(c.Sys, "block"), c.Dev} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(c.Mounts, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// Disk describes a disk of a fake machine.
type Disk struct {
	Name       string
	Size       int64 // bytes; the image file is sparse
	SectorSize int   // 512 if zero
	Removable  bool
	Rotational bool
	ReadOnly   bool
	Model      string
	Serial     string
	// USB puts the disk's sysfs entry below a USB host controller, as the
	// kernel does for a USB disk: Sys/block/<name> links into
	// Sys/devices/.../usb2/2-1/... .
	USB bool
	// Layout, if set, is written to the disk as its partition table.
	Layout *imager.Layout
	// KernelPartitions adds sysfs entries for the table's partitions, as
	// if the kernel had read it.
	KernelPartitions bool
}

// AddDisk adds a disk to the fake machine of c: its sysfs entry and
// its image file, with the table of d.Layout if set. It returns the table
// written (nil without a layout).
func AddDisk(t testing.TB, c partition.Config, d Disk) *partition.Table {
	t.Helper()
	if d.SectorSize == 0 {
		d.SectorSize = 512
	}
	sys := filepath.Join(c.Sys, "block", d.Name)
	if d.USB {
		real := filepath.Join(c.Sys, "devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block", d.Name)
		if err := os.MkdirAll(real, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, sys); err != nil {
			t.Fatal(err)
		}
	}
	put := func(dir, name, value string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	put(sys, "size", fmt.Sprint(d.Size/512))
	put(sys, "removable", flag(d.Removable))
	put(sys, "ro", flag(d.ReadOnly))
	put(sys, "queue/rotational", flag(d.Rotational))
	put(sys, "queue/logical_block_size", fmt.Sprint(d.SectorSize))
	if d.Model != "" {
		put(sys, "device/model", d.Model+"   ") // SCSI pads with spaces
	}
	if d.Serial != "" {
		put(sys, "device/serial", d.Serial)
	}
	path := filepath.Join(c.Dev, d.Name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(d.Size); err != nil {
		t.Fatal(err)
	}
	if d.Layout == nil {
		return nil
	}
	tab, err := partition.PlanTable(*d.Layout, d.Size, d.SectorSize)
	if err != nil {
		t.Fatalf("fake disk %s: %v", d.Name, err)
	}
	if err := partition.WriteTable(f, d.Size, tab); err != nil {
		t.Fatalf("fake disk %s: %v", d.Name, err)
	}
	if d.KernelPartitions {
		for _, p := range tab.Partitions {
			name := partition.PartitionName(d.Name, p.Number)
			put(filepath.Join(sys, name), "partition", fmt.Sprint(p.Number))
			put(filepath.Join(sys, name), "start", fmt.Sprint(p.Start/512))
			put(filepath.Join(sys, name), "size", fmt.Sprint(p.Size/512))
		}
	}
	return tab
}
