package partition_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/loopdev"

	. "github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/protocol"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// loopDevice attaches a sparse file of size bytes as a loop device (with
// partition scanning unless noPartscan) and detaches it when the test ends.
func loopDevice(t *testing.T, size int64, noPartscan bool) (dev, backing string) {
	t.Helper()
	backing = sparse(t, size).Name()
	dev = loopdev.Attach(t, backing, !noPartscan)
	t.Cleanup(func() {
		// Without partscan, detaching leaves partitions added by BLKPG
		// behind on the free loop device: remove them first (this runs
		// before Attach's detach).
		if f, err := os.Open(dev); err == nil {
			for _, p := range SysPartitions(filepath.Join("/sys/block", filepath.Base(dev)), "/dev") {
				if err := DeletePartition(f, p.Number); err != nil {
					t.Errorf("remove partition %s: %v", p.Name, err)
				}
			}
			f.Close()
		}
	})
	t.Logf("attached %s to %s", backing, dev)
	return dev, backing
}

// listOnly lists the machine's disks and keeps the named ones.
func listOnly(t *testing.T, c Config, devs ...string) []Disk {
	t.Helper()
	c.IncludeVirtual = true
	all, err := c.List(testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []Disk
	for _, d := range all {
		for _, dev := range devs {
			if d.Name == filepath.Base(dev) {
				out = append(out, d)
			}
		}
	}
	if len(out) != len(devs) {
		t.Fatalf("List() has %d of the disks %v: %v", len(out), devs, all)
	}
	return out
}

func sha(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// blkidExport returns `blkid -p -o export` of a device as a map.
func blkidExport(t *testing.T, dev string) map[string]string {
	t.Helper()
	needs.Tool(t, "blkid")
	out, _ := exec.Command("blkid", "-p", "-o", "export", dev).CombinedOutput()
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// TestLoopCreateTableGPT: on a real block device the GPT is written as the
// layout says (checked with go-diskfs, sfdisk and blkid), the kernel gets
// the partitions, their nodes appear, List sees them, and the imager
// writes the image through them.
func TestLoopCreateTableGPT(t *testing.T) {
	dev, _ := loopDevice(t, 64*MiB, false)
	im, srcs := realImage(t)
	var c Config
	places, err := c.CreateTable(context.Background(), testlog.New(t), diskAt(t, c, dev), im)
	if err != nil {
		t.Fatal(err)
	}
	want := []Place{
		{Number: 1, Path: dev + "p1", Size: 4 * MiB, Length: im.Files[0].Length},
		{Number: 2, Path: dev + "p2", Size: 8 * MiB, Length: im.Files[1].Length},
	}
	if d := cmp.Diff(want, places); d != "" {
		t.Fatalf("CreateTable(%s) places (-want +got):\n%s", dev, d)
	}
	for _, p := range places {
		fi, err := os.Stat(p.Path)
		if err != nil || fi.Mode()&os.ModeDevice == 0 {
			t.Fatalf("partition node %s: %v, mode %v; want a block device", p.Path, err, fi)
		}
	}

	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := ReadTable(f, 64*MiB, 512)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	wantParts := []Partition{
		{Number: 1, Start: MiB, Size: 4 * MiB, Type: efiType, Label: "ESP", GUID: guid1},
		{Number: 2, Start: 5 * MiB, Size: 8 * MiB, Type: linuxType, Label: "root", GUID: guid2},
	}
	if d := cmp.Diff(wantParts, tab.Partitions); d != "" {
		t.Errorf("ReadTable(%s) (-want +got):\n%s", dev, d)
	}
	checkSfdisk(t, dev, tab)
	if m := blkidExport(t, dev+"p1"); m != nil {
		for k, v := range map[string]string{
			"PART_ENTRY_SCHEME": "gpt", "PART_ENTRY_NAME": "ESP", "PART_ENTRY_UUID": strings.ToLower(guid1),
			"PART_ENTRY_TYPE": strings.ToLower(efiType), "PART_ENTRY_OFFSET": "2048", "PART_ENTRY_SIZE": "8192", "PART_ENTRY_NUMBER": "1",
		} {
			if m[k] != v {
				t.Errorf("blkid -p %sp1: %s=%q, want %q (all: %v)", dev, k, m[k], v, m)
			}
		}
	}

	disks := listOnly(t, c, dev)
	gotParts := disks[0].Partitions
	for i := range wantParts {
		wantParts[i].Name = filepath.Base(dev) + fmt.Sprintf("p%d", i+1)
		wantParts[i].Path = dev + fmt.Sprintf("p%d", i+1)
	}
	if d := cmp.Diff(wantParts, gotParts); d != "" {
		t.Errorf("List() partitions of %s (-want +got):\n%s", dev, d)
	}
	if disks[0].Table != "gpt" || disks[0].Boot != "" || disks[0].InUse != "" {
		t.Errorf("List() %s = %+v; want a free GPT disk", dev, disks[0])
	}

	paths, err := Paths(places)
	if err != nil {
		t.Fatal(err)
	}
	fetchParts(t, im, srcs, func(cfg *imager.Config) { cfg.Paths = paths })
	for i, p := range places {
		want, _ := os.ReadFile(srcs[i])
		got := make([]byte, len(want))
		f, err := os.Open(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadFull(f, got)
		f.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("partition %s does not hold %s after the fetch (%v)", p.Path, srcs[i], err)
		}
	}
}

// TestLoopRecreateMBR: a second table replaces the first in the kernel's
// view too (old partitions go, new ones come), here an MBR over a GPT.
func TestLoopRecreateMBR(t *testing.T) {
	dev, _ := loopDevice(t, 64*MiB, false)
	var c Config
	log := testlog.New(t)
	gptImage := testImage("gpt3", "gpt", imager.PartInfo{Number: 1, Size: MiB}, imager.PartInfo{Number: 2, Size: MiB}, imager.PartInfo{Number: 3, Size: MiB})
	if _, err := c.CreateTable(context.Background(), log, diskAt(t, c, dev), gptImage); err != nil {
		t.Fatal(err)
	}
	mbrImage := testImage("dos", "mbr",
		imager.PartInfo{Number: 1, Size: 20 * MiB, Type: "0x0c"},
		imager.PartInfo{Number: 2, Size: 10 * MiB, Type: "0x83", GUID: "0badcafe-02"})
	places, err := c.CreateTable(context.Background(), log, diskAt(t, c, dev), mbrImage)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := []string{places[0].Path, places[1].Path}, []string{dev + "p1", dev + "p2"}; !slices.Equal(got, want) {
		t.Errorf("CreateTable(mbr) places = %v, want %v", got, want)
	}
	d := listOnly(t, c, dev)[0]
	var kernel []string
	for _, p := range SysPartitions(filepath.Join("/sys/block", d.Name), "/dev") {
		kernel = append(kernel, fmt.Sprintf("%s@%d+%d", p.Name, p.Start, p.Size))
	}
	name := filepath.Base(dev)
	wantKernel := []string{fmt.Sprintf("%sp1@%d+%d", name, MiB, 20*MiB), fmt.Sprintf("%sp2@%d+%d", name, 21*MiB, 10*MiB)}
	if !slices.Equal(kernel, wantKernel) {
		t.Errorf("kernel partitions of %s = %v, want %v (the GPT's third must be gone)", dev, kernel, wantKernel)
	}
	if d.Table != "mbr" || d.GUID != "0badcafe" || d.Partitions[1].GUID != "0badcafe-02" {
		t.Errorf("List() %s = table %s %s, partitions %+v; want MBR 0badcafe", dev, d.Table, d.GUID, d.Partitions)
	}
	f, _ := os.Open(dev)
	tab, err := ReadTable(f, 64*MiB, 512)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	checkSfdisk(t, dev, tab)
}

// TestLoopTooSmall: a disk smaller than the image is refused and left
// exactly as it was.
func TestLoopTooSmall(t *testing.T) {
	dev, backing := loopDevice(t, 8*MiB, false)
	if err := os.WriteFile(backing, bytes.Repeat([]byte("precious"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	before := sha(t, backing)
	im := testImage("win11", "gpt", imager.PartInfo{Number: 1, Size: 4 * MiB}, imager.PartInfo{Number: 2, Size: 4 * MiB})
	var c Config
	_, err := c.CreateTable(context.Background(), testlog.New(t), diskAt(t, c, dev), im)
	if want := fmt.Sprintf("target %s (8MiB) is smaller than image win11 (9.0MiB): pick a larger disk or a smaller image", dev); !errors.Is(err, ErrTooSmall) || !strings.Contains(err.Error(), want) {
		t.Errorf("CreateTable(8 MiB disk, 9 MiB image) = %v, want %q", err, want)
	}
	if _, err := Choose(listOnly(t, c, dev), protocol.Target{Disk: filepath.Base(dev)}, im); !errors.Is(err, ErrTooSmall) {
		t.Errorf("Choose(8 MiB disk, 9 MiB image) = %v, want ErrTooSmall", err)
	}
	if sha(t, backing) != before {
		t.Errorf("the refused disk was changed")
	}
}

// TestLoopBootMedium: the disk holding the boot label is marked, never
// chosen, and CreateTable refuses it; so is a disk named as the boot device.
func TestLoopBootMedium(t *testing.T) {
	stick, stickFile := loopDevice(t, 32*MiB, false)
	disk, diskFile := loopDevice(t, 64*MiB, false)
	var c Config
	log := testlog.New(t)
	esp := testImage("stick", "gpt", imager.PartInfo{Number: 1, Size: 8 * MiB, Type: efiType, Label: DefaultBootLabel})
	if _, err := c.CreateTable(context.Background(), log, diskAt(t, c, stick), esp); err != nil {
		t.Fatal(err)
	}
	before := sha(t, stickFile)

	disks := listOnly(t, c, stick, disk)
	if disks[0].Name != filepath.Base(stick) || disks[0].Boot == "" || disks[1].Boot != "" {
		t.Fatalf("List() = %v; want %s marked as the boot medium and %s not", disks, stick, disk)
	}
	im := testImage("small", "gpt", imager.PartInfo{Number: 1, Size: 4 * MiB})
	if _, err := Choose(disks, protocol.Target{Disk: stick}, im); !errors.Is(err, ErrBootMedium) || !strings.Contains(err.Error(), "booted from") {
		t.Errorf("Choose(disk=%s) = %v, want ErrBootMedium saying so", stick, err)
	}
	if _, err := Choose(disks, protocol.Target{Label: DefaultBootLabel}, im); !errors.Is(err, ErrBootMedium) {
		t.Errorf("Choose(label=%s) = %v, want ErrBootMedium", DefaultBootLabel, err)
	}
	// "first" skips the stick (it is removable=0 as a loop device: only the
	// boot mark keeps it out).
	if got, err := Choose(disks, protocol.Target{Disk: protocol.FirstDisk}, im); err != nil || got.Disk.Path != disk {
		t.Errorf("Choose(first) = %v, %v; want %s", got, err, disk)
	}
	if _, err := c.CreateTable(context.Background(), log, diskAt(t, c, stick), im); !errors.Is(err, ErrBootMedium) {
		t.Errorf("CreateTable(%s) = %v, want ErrBootMedium", stick, err)
	}
	if sha(t, stickFile) != before {
		t.Errorf("the boot medium was changed")
	}

	c.BootDevices = []string{disk}
	beforeDisk := sha(t, diskFile)
	if _, err := c.CreateTable(context.Background(), log, diskAt(t, c, disk), im); !errors.Is(err, ErrBootMedium) {
		t.Errorf("CreateTable(%s) with BootDevices=%v = %v, want ErrBootMedium", disk, c.BootDevices, err)
	}
	if sha(t, diskFile) != beforeDisk {
		t.Errorf("the disk named as the boot device was changed")
	}
}

// TestLoopInUse: a disk with a partition held open exclusively (as a
// mounted filesystem holds it) is not repartitioned.
func TestLoopInUse(t *testing.T) {
	dev, backing := loopDevice(t, 64*MiB, false)
	var c Config
	log := testlog.New(t)
	im := testImage("one", "gpt", imager.PartInfo{Number: 1, Size: 8 * MiB})
	places, err := c.CreateTable(context.Background(), log, diskAt(t, c, dev), im)
	if err != nil {
		t.Fatal(err)
	}
	held, err := os.OpenFile(places[0].Path, os.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	before := sha(t, backing)
	im2 := testImage("two", "gpt", imager.PartInfo{Number: 1, Size: 2 * MiB}, imager.PartInfo{Number: 2, Size: 2 * MiB})
	if _, err := c.CreateTable(context.Background(), log, diskAt(t, c, dev), im2); !errors.Is(err, ErrInUse) {
		t.Errorf("CreateTable(%s with %s held) = %v, want ErrInUse", dev, places[0].Path, err)
	}
	if _, _, err := OpenParts([]Place{{Number: 1, Path: places[0].Path, Size: 8 * MiB, Length: MiB}}); !errors.Is(err, ErrInUse) {
		t.Errorf("OpenParts(held %s) = %v, want ErrInUse", places[0].Path, err)
	}
	if sha(t, backing) != before {
		t.Errorf("the busy disk was changed")
	}
}

// TestLoopDiscard: with Discard the old contents are gone (the loop driver
// punches holes); without it they stay.
func TestLoopDiscard(t *testing.T) {
	for _, disc := range []bool{false, true} {
		dev, backing := loopDevice(t, 32*MiB, false)
		if err := os.WriteFile(backing, bytes.Repeat([]byte("old data"), 4<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		c := Config{Discard: disc}
		if _, err := c.CreateTable(context.Background(), testlog.New(t), diskAt(t, c, dev), testImage("x", "gpt", imager.PartInfo{Number: 1, Size: 16 * MiB})); err != nil {
			t.Fatal(err)
		}
		f, _ := os.Open(backing)
		b := make([]byte, 4096)
		f.ReadAt(b, 8*MiB)
		f.Close()
		if zero := bytes.Equal(b, make([]byte, len(b))); zero != disc {
			t.Errorf("Discard=%v: partition bytes zero = %v, want %v", disc, zero, disc)
		}
	}
}

// TestLoopNoPartscan: a loop device attached without partition scanning
// refuses BLKRRPART. CreateTable then adds the partitions with BLKPG
// (which this kernel allows), or, where the kernel refuses that too,
// returns places at offsets on the disk. Either way OpenParts writes each
// part at its partition's start.
func TestLoopNoPartscan(t *testing.T) {
	dev, backing := loopDevice(t, 32*MiB, true)
	var c Config
	im := testImage("x", "gpt", imager.PartInfo{Number: 1, Size: 4 * MiB}, imager.PartInfo{Number: 2, Size: 4 * MiB})
	places, err := c.CreateTable(context.Background(), testlog.New(t), diskAt(t, c, dev), im)
	if err != nil {
		t.Fatal(err)
	}
	nodes := []Place{
		{Number: 1, Path: dev + "p1", Size: 4 * MiB, Length: 4 * MiB},
		{Number: 2, Path: dev + "p2", Size: 4 * MiB, Length: 4 * MiB},
	}
	offsets := []Place{
		{Number: 1, Path: dev, Offset: MiB, Size: 4 * MiB, Length: 4 * MiB},
		{Number: 2, Path: dev, Offset: 5 * MiB, Size: 4 * MiB, Length: 4 * MiB},
	}
	switch {
	case cmp.Equal(places, nodes):
		t.Logf("the kernel took the partitions by BLKPG: %v", places)
	case cmp.Equal(places, offsets):
		t.Logf("the kernel refused partitions: places at offsets %v", places)
	default:
		t.Fatalf("CreateTable(%s without partscan) = %v, want %v or %v", dev, places, nodes, offsets)
	}
	parts, closeAll, err := OpenParts(places)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parts[1].RW.WriteAt([]byte("second"), 0); err != nil {
		t.Fatal(err)
	}
	if err := closeAll(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	f, _ := os.Open(backing)
	f.ReadAt(b, 5*MiB)
	f.Close()
	if string(b) != "second" {
		t.Errorf("partition 2 at 5 MiB holds %q, want %q", b, "second")
	}
}
