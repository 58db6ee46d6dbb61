package partition_test

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/testlog"
	. "github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/partition/partitiontest"
	"github.com/pxeswarm/pxeswarm/protocol"

	"github.com/google/go-cmp/cmp"
	"github.com/pxeswarm/pxeswarm/imager"
)

// writeAt writes b at off in path.
func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// fat32 is a FAT32 boot sector with a volume label.
func fat32(label string) []byte {
	b := make([]byte, 512)
	b[66] = 0x29
	copy(b[71:82], label+"           ")
	copy(b[82:90], "FAT32   ")
	b[510], b[511] = 0x55, 0xaa
	return b
}

// ext4 is the first 2 KiB of an ext2/3/4 filesystem with a volume name.
func ext4(label string) []byte {
	b := make([]byte, 2048)
	b[1024+56], b[1024+57] = 0x53, 0xef
	copy(b[1024+120:1024+136], label)
	return b
}

// withSys adds the kernel's name and node to table partitions.
func withSys(c Config, disk string, ps []Partition) []Partition {
	var out []Partition
	for _, p := range ps {
		p.Name = PartitionName(disk, p.Number)
		p.Path = filepath.Join(c.Dev, p.Name)
		out = append(out, p)
	}
	return out
}

func TestList(t *testing.T) {
	c := partitiontest.Machine(t)
	sdb := partitiontest.AddDisk(t, c, partitiontest.Disk{
		Name: "sdb", Size: 256 * MiB, Model: "QEMU HARDDISK", Serial: "QM0001", KernelPartitions: true,
		Layout: &imager.Layout{Table: "gpt", Parts: []imager.PartInfo{
			{Number: 1, Size: 32 * MiB, Type: efiType, Label: "EFI"},
			{Number: 2, Size: 64 * MiB, Label: "root", GUID: guid2},
		}},
	})
	writeAt(t, filepath.Join(c.Dev, "sdb"), sdb.Partitions[1].Start, ext4("rootfs"))
	partitiontest.AddDisk(t, c, partitiontest.Disk{Name: "sda", Size: 512 * MiB, Rotational: true})
	partitiontest.AddDisk(t, c, partitiontest.Disk{Name: "sdaa", Size: 64 * MiB})
	iso := make([]byte, 2048)
	copy(iso, "\x01CD001")
	copy(iso[40:], "DEBIAN 12                       ")
	writeAt(t, filepath.Join(c.Dev, "sdaa"), 32768, iso)
	// A table the kernel has not read: no partition devices.
	nvme := partitiontest.AddDisk(t, c, partitiontest.Disk{
		Name: "nvme0n1", Size: 128 * MiB, SectorSize: 4096, Serial: "S4EWNX0",
		Layout: &imager.Layout{Table: "mbr", Parts: []imager.PartInfo{{Number: 1, Size: 16 * MiB, Type: "0x07"}}},
	})
	// The USB stick: its EFI partition's FAT label marks it.
	stick := partitiontest.AddDisk(t, c, partitiontest.Disk{
		Name: "sdc", Size: 64 * MiB, Removable: true, KernelPartitions: true,
		Layout: &imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: 16 * MiB, Type: efiType, Label: "ESP"}}},
	})
	writeAt(t, filepath.Join(c.Dev, "sdc"), stick.Partitions[0].Start, fat32("PXESWARM"))
	// A disk marked by its GPT partition name, and one that is read-only
	// and held by device mapper.
	named := partitiontest.AddDisk(t, c, partitiontest.Disk{
		Name: "sdd", Size: 64 * MiB, KernelPartitions: true,
		Layout: &imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: MiB, Label: "pxeswarm"}}},
	})
	partitiontest.AddDisk(t, c, partitiontest.Disk{Name: "sde", Size: 64 * MiB, ReadOnly: true})
	if err := os.MkdirAll(filepath.Join(c.Sys, "block/sde/holders/dm-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	partitiontest.AddDisk(t, c, partitiontest.Disk{Name: "loop0", Size: 64 * MiB})
	partitiontest.AddDisk(t, c, partitiontest.Disk{Name: "zram0", Size: 64 * MiB})
	if err := os.WriteFile(c.Mounts, []byte("/dev/sdb2 /mnt/my\\040root ext4 rw 0 0\nproc /proc proc rw 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	got, err := c.List(testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	sdbParts := withSys(c, "sdb", sdb.Partitions)
	sdbParts[1].FSLabel = "rootfs"
	sdbParts[1].InUse = "sdb2 mounted on /mnt/my root"
	stickParts := withSys(c, "sdc", stick.Partitions)
	stickParts[0].FSLabel = "PXESWARM"
	want := []Disk{
		{Name: "nvme0n1", Path: filepath.Join(c.Dev, "nvme0n1"), Size: 128 * MiB, SectorSize: 4096, Serial: "S4EWNX0",
			Table: "mbr", GUID: nvme.GUID, Partitions: nvme.Partitions},
		{Name: "sda", Path: filepath.Join(c.Dev, "sda"), Size: 512 * MiB, SectorSize: 512, Rotational: true},
		{Name: "sdb", Path: filepath.Join(c.Dev, "sdb"), Size: 256 * MiB, SectorSize: 512, Model: "QEMU HARDDISK", Serial: "QM0001",
			Table: "gpt", GUID: sdb.GUID, Partitions: sdbParts, InUse: "sdb2 mounted on /mnt/my root"},
		{Name: "sdc", Path: filepath.Join(c.Dev, "sdc"), Size: 64 * MiB, SectorSize: 512, Removable: true,
			Table: "gpt", GUID: stick.GUID, Partitions: stickParts, Boot: "its partition 1 holds a filesystem labelled PXESWARM"},
		{Name: "sdd", Path: filepath.Join(c.Dev, "sdd"), Size: 64 * MiB, SectorSize: 512,
			Table: "gpt", GUID: named.GUID, Partitions: withSys(c, "sdd", named.Partitions), Boot: "its partition 1 is named pxeswarm"},
		{Name: "sde", Path: filepath.Join(c.Dev, "sde"), Size: 64 * MiB, SectorSize: 512, ReadOnly: true, InUse: "sde held by dm-0"},
		{Name: "sdaa", Path: filepath.Join(c.Dev, "sdaa"), Size: 64 * MiB, SectorSize: 512, FSLabel: "DEBIAN 12"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("List() (-want +got):\n%s", d)
	}

	// Virtual devices when asked for; boot media by name; label matching off.
	c.IncludeVirtual = true
	c.BootDevices = []string{"/dev/sda", "sdb1"}
	c.BootLabels = []string{}
	got, err = c.List(testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	boot := map[string]string{}
	var names []string
	for _, d := range got {
		names = append(names, d.Name)
		if d.Boot != "" {
			boot[d.Name] = d.Boot
		}
	}
	wantBoot := map[string]string{"sda": "named as the boot device", "sdb": "its partition sdb1 is named as the boot device"}
	if d := cmp.Diff(wantBoot, boot); d != "" {
		t.Errorf("List(BootDevices=%v, BootLabels=[]) boot media (-want +got):\n%s", c.BootDevices, d)
	}
	wantNames := []string{"loop0", "nvme0n1", "sda", "sdb", "sdc", "sdd", "sde", "sdaa", "zram0"}
	if d := cmp.Diff(wantNames, names); d != "" {
		t.Errorf("List(IncludeVirtual) names (-want +got):\n%s", d)
	}

	// The partition the boot loader was loaded from (lower case, as the
	// EFI variable has it) marks its disk, and only that disk.
	c.BootDevices = nil
	c.BootPartUUIDs = []string{strings.ToLower(sdb.Partitions[0].GUID)}
	got, err = c.List(testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	boot = map[string]string{}
	for _, d := range got {
		if d.Boot != "" {
			boot[d.Name] = d.Boot
		}
	}
	wantBoot = map[string]string{"sdb": "the machine was loaded from its partition 1 (PARTUUID " + strings.ToLower(sdb.Partitions[0].GUID) + ")"}
	if d := cmp.Diff(wantBoot, boot); d != "" {
		t.Errorf("List(BootPartUUIDs=%v) boot media (-want +got):\n%s", c.BootPartUUIDs, d)
	}
	names = names[:0]
	for _, d := range got {
		names = append(names, d.Name)
	}
	if d := cmp.Diff(wantNames, names); d != "" {
		t.Errorf("List(IncludeVirtual) names (-want +got):\n%s", d)
	}
}

// TestListStaleKernelView: when the kernel's partitions differ from the
// table on disk, the table wins and the partition is addressed on the disk.
func TestListStaleKernelView(t *testing.T) {
	c := partitiontest.Machine(t)
	tab := partitiontest.AddDisk(t, c, partitiontest.Disk{
		Name: "vda", Size: 64 * MiB, KernelPartitions: true,
		Layout: &imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: 8 * MiB}, {Number: 2, Size: 8 * MiB}}},
	})
	// The kernel still has an old, larger partition 2 and a partition 5.
	if err := os.WriteFile(filepath.Join(c.Sys, "block/vda/vda2/size"), []byte("40000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"partition": "5", "start": "100000", "size": "2048"} {
		os.MkdirAll(filepath.Join(c.Sys, "block/vda/vda5"), 0o755)
		if err := os.WriteFile(filepath.Join(c.Sys, "block/vda/vda5", name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	disks, err := c.List(testlog.New(t))
	if err != nil || len(disks) != 1 {
		t.Fatalf("List() = %v, %v", disks, err)
	}
	want := []Partition{
		withSys(c, "vda", tab.Partitions[:1])[0],
		tab.Partitions[1],
		{Number: 5, Name: "vda5", Path: filepath.Join(c.Dev, "vda5"), Start: 100000 * 512, Size: 2048 * 512},
	}
	if d := cmp.Diff(want, disks[0].Partitions); d != "" {
		t.Errorf("List() partitions (-want +got):\n%s", d)
	}
}

func TestLessName(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"sda", "sdb", true}, {"sdb", "sda", false}, {"sdz", "sdaa", true}, {"sdaa", "sdz", false},
		{"nvme0n1", "nvme1n1", true}, {"nvme2n1", "nvme10n1", true}, {"nvme10n1", "nvme2n1", false},
		{"sda", "vda", true}, {"nvme0n1", "sda", true}, {"mmcblk0", "nvme0n1", true}, {"sda", "sda", false}, {"sd", "sda", true},
		{"sdaa", "sr0", true}, {"xvdb", "xvdaa", true}, {"nvme0n1", "sdaa", true},
		{"mmcblk0", "mmcblk1", true}, {"nvme0n2", "nvme0n10", true},
	} {
		if got := LessName(tc.a, tc.b); got != tc.want {
			t.Errorf("LessName(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestPartitionName(t *testing.T) {
	for disk, want := range map[string]string{"sda": "sda3", "nvme0n1": "nvme0n1p3", "mmcblk0": "mmcblk0p3", "loop7": "loop7p3", "vdb": "vdb3"} {
		if got := PartitionName(disk, 3); got != want {
			t.Errorf("PartitionName(%q, 3) = %q, want %q", disk, got, want)
		}
	}
}

// TestListUSB: a disk whose sysfs entry sits below a USB host controller
// is marked USB, removable flag or not; the others are not.
func TestListUSB(t *testing.T) {
	c := partitiontest.Machine(t)
	partitiontest.AddDisk(t, c, partitiontest.Disk{Name: "sda", Size: 64 * MiB, USB: true, Model: "Portable SSD"})
	partitiontest.AddDisk(t, c, partitiontest.Disk{Name: "sdb", Size: 64 * MiB})
	disks, err := c.List(testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, d := range disks {
		got[d.Name] = d.USB
	}
	if want := map[string]bool{"sda": true, "sdb": false}; !maps.Equal(got, want) {
		t.Errorf("List() USB = %v, want %v", got, want)
	}
	tgt, err := Choose(disks, protocol.Target{Disk: protocol.FirstDisk}, testImage("small", "", imager.PartInfo{Number: 1, Size: MiB}))
	if err != nil || tgt.Disk.Name != "sdb" {
		t.Errorf("Choose(first) = %s, %v, want sdb (sda is on USB)", tgt.Disk.Name, err)
	}
}
