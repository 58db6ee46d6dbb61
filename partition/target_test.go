package partition_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/testlog"
	. "github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/partition/partitiontest"
	"github.com/pxeswarm/pxeswarm/protocol"

	"github.com/google/go-cmp/cmp"
	"github.com/pxeswarm/pxeswarm/imager"
)

// testImage builds an image description without hashing anything: what
// Choose, Map and CreateTable look at.
func testImage(name, table string, parts ...imager.PartInfo) *imager.Image {
	im := &imager.Image{Name: name, Layout: imager.Layout{Table: table, Parts: parts}}
	for i, p := range parts {
		f := imager.File{Path: "part" + string(rune('a'+i)), Offset: im.Length, Length: p.Size, Part: p}
		im.Files = append(im.Files, f)
		im.Length += p.Size
	}
	return im
}

func testDisks() []Disk {
	return []Disk{
		{Name: "sdd", Path: "/dev/sdd", Size: 1 << 40, SectorSize: 512, ReadOnly: true},
		{Name: "nvme0n1", Path: "/dev/nvme0n1", Size: 256 * GiB, SectorSize: 512, InUse: "nvme0n1p2 mounted on /",
			Partitions: []Partition{
				{Number: 1, Name: "nvme0n1p1", Path: "/dev/nvme0n1p1", Start: MiB, Size: GiB, Label: "boot"},
				{Number: 2, Name: "nvme0n1p2", Path: "/dev/nvme0n1p2", Start: GiB + MiB, Size: 200 * GiB, Label: "system", InUse: "nvme0n1p2 mounted on /"},
			}},
		{Name: "sdb", Path: "/dev/sdb", Size: 120 * GiB, SectorSize: 512,
			Partitions: []Partition{{Number: 1, Name: "sdb1", Path: "/dev/sdb1", Start: MiB, Size: 100 * GiB, Label: "data", GUID: guid1}}},
		{Name: "sdc", Path: "/dev/sdc", Size: 32 * GiB, SectorSize: 512, Removable: true, Boot: "its partition 1 is named PXESWARM",
			Partitions: []Partition{
				{Number: 1, Name: "sdc1", Path: "/dev/sdc1", Start: MiB, Size: 512 * MiB, Label: "PXESWARM"},
				{Number: 2, Name: "sdc2", Path: "/dev/sdc2", Start: 513 * MiB, Size: 20 * GiB, Label: "images"},
			}},
		{Name: "sda", Path: "/dev/sda", Size: 500 * GiB, SectorSize: 512,
			Partitions: []Partition{
				{Number: 1, Name: "sda1", Path: "/dev/sda1", Start: MiB, Size: 100 * MiB, Label: "EFI"},
				{Number: 2, Start: 101 * MiB, Size: 400 * GiB, Label: "data", GUID: guid2}, // no kernel device
			}},
		{Name: "sde", Path: "/dev/sde", SectorSize: 512}, // a card reader without a card
	}
}

func TestChoose(t *testing.T) {
	win11 := testImage("win11", "gpt",
		imager.PartInfo{Number: 1, Start: MiB, Size: 100 * MiB, Type: efiType},
		imager.PartInfo{Number: 2, Size: 200 * GiB, Type: msType})
	big := testImage("big", "", imager.PartInfo{Number: 2, Size: 256 * GiB})
	small := testImage("small", "", imager.PartInfo{Number: 1, Size: 50 * MiB})
	whole := testImage("whole", "", imager.PartInfo{Number: 0, Size: 100 * GiB})
	without := func(names ...string) []Disk {
		var out []Disk
		for _, d := range testDisks() {
			if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+d.Name+" ") {
				out = append(out, d)
			}
		}
		return out
	}
	usb := func(names ...string) []Disk {
		out := testDisks()
		for i := range out {
			if slices.Contains(names, out[i].Name) {
				out[i].USB = true
			}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		disks []Disk
		sel   protocol.Target
		im    *imager.Image
		want  string // Target.String()
		err   error
		msg   string // part of the error message
	}{
		{name: "first skips read-only, in use, removable boot stick", sel: protocol.Target{Disk: protocol.FirstDisk}, im: win11, want: "/dev/sda"},
		{name: "first whole-disk image", sel: protocol.Target{Disk: protocol.FirstDisk}, im: whole, want: "/dev/sda"},
		{name: "first is too small: an error, not the next disk", disks: without("sda"), sel: protocol.Target{Disk: protocol.FirstDisk}, im: win11, err: ErrTooSmall,
			msg: "target /dev/sdb (120GiB) is smaller than image win11 (200.1GiB): pick a larger disk or a smaller image"},
		{name: "no usable disk", disks: without("sda", "sdb"), sel: protocol.Target{Disk: protocol.FirstDisk}, im: small, err: ErrNoTarget,
			msg: "/dev/sdc (32GiB, removable, boot medium: its partition 1 is named PXESWARM)"},
		{name: "no disks", disks: []Disk{}, sel: protocol.Target{Disk: protocol.FirstDisk}, im: small, err: ErrNoTarget, msg: "no disks at all"},
		{name: "sector size unknown (0) counts as 512", disks: []Disk{{Name: "vda", Path: "/dev/vda", Size: 201 * GiB}}, sel: protocol.Target{Disk: protocol.FirstDisk}, im: win11, want: "/dev/vda"},
		{name: "first skips a fixed USB disk", disks: usb("sda"), sel: protocol.Target{Disk: protocol.FirstDisk}, im: small, want: "/dev/sdb"},
		{name: "first with only USB disks left", disks: usb("sda", "sdb"), sel: protocol.Target{Disk: protocol.FirstDisk}, im: small, err: ErrNoTarget, msg: "a USB disk must be named"},
		{name: "a USB disk named explicitly is fine", disks: usb("sda"), sel: protocol.Target{Disk: "sda"}, im: small, want: "/dev/sda"},
		{name: "by name", sel: protocol.Target{Disk: "sdb"}, im: small, want: "/dev/sdb"},
		{name: "by /dev path", sel: protocol.Target{Disk: "/dev/sda"}, im: win11, want: "/dev/sda"},
		{name: "removable by name is fine", sel: protocol.Target{Disk: "sdc", Partition: 2}, disks: []Disk{func() Disk { d := testDisks()[3]; d.Boot = ""; return d }()}, im: small, want: "/dev/sdc2"},
		{name: "by name too small", sel: protocol.Target{Disk: "sdb"}, im: win11, err: ErrTooSmall, msg: "target /dev/sdb (120GiB)"},
		{name: "boot medium by name", sel: protocol.Target{Disk: "sdc"}, im: small, err: ErrBootMedium,
			msg: "/dev/sdc is the medium the agent booted from (its partition 1 is named PXESWARM): it is never written"},
		{name: "boot medium partition by name", sel: protocol.Target{Disk: "/dev/sdc", Partition: 2}, im: small, err: ErrBootMedium},
		{name: "read-only by name", sel: protocol.Target{Disk: "sdd"}, im: small, err: ErrReadOnly},
		{name: "in use by name", sel: protocol.Target{Disk: "nvme0n1"}, im: small, err: ErrInUse, msg: "nvme0n1p2 mounted on /"},
		{name: "free partition of a busy disk", sel: protocol.Target{Disk: "nvme0n1", Partition: 1}, im: small, want: "/dev/nvme0n1p1"},
		{name: "mounted partition by number", sel: protocol.Target{Disk: "nvme0n1", Partition: 2}, im: small, err: ErrInUse, msg: "/dev/nvme0n1p2 is in use"},
		{name: "no medium", sel: protocol.Target{Disk: "sde"}, im: small, err: ErrNoTarget, msg: "no medium"},
		{name: "unknown name", sel: protocol.Target{Disk: "sdz"}, im: small, err: ErrNoTarget, msg: "there is no disk sdz; saw /dev/nvme0n1 (256GiB, in use: nvme0n1p2 mounted on /) partitions 1=\"boot\" 2=\"system\"; /dev/sda (500GiB)"},
		{name: "a partition named as a disk", sel: protocol.Target{Disk: "sda1"}, im: small, err: ErrNoTarget, msg: "select disk sda and partition 1"},
		{name: "disk and partition", sel: protocol.Target{Disk: "sda", Partition: 1}, im: small, want: "/dev/sda1"},
		{name: "disk and partition without a device", sel: protocol.Target{Disk: "sda", Partition: 2}, im: big, want: "partition 2 of /dev/sda"},
		{name: "disk and missing partition", sel: protocol.Target{Disk: "sda", Partition: 7}, im: small, err: ErrNoTarget, msg: "has no partition 7 (it has 1, 2)"},
		{name: "partition too small", sel: protocol.Target{Disk: "sda", Partition: 1}, im: big, err: ErrTooSmall,
			msg: "target /dev/sda1 (100MiB) is smaller than image big (256GiB): pick a larger partition"},
		{name: "several parts into one partition", sel: protocol.Target{Disk: "sda", Partition: 2}, im: win11, err: ErrLayout},
		{name: "label", sel: protocol.Target{Label: "EFI"}, im: small, want: "/dev/sda1"},
		{name: "label is exact", sel: protocol.Target{Label: "efi"}, im: small, err: ErrNoTarget, msg: `partitions 1="EFI" 2="data"`},
		{name: "label on two disks", sel: protocol.Target{Label: "data"}, im: small, err: ErrAmbiguous, msg: "matches partition 2 of /dev/sda, /dev/sdb1: select by disk and partition"},
		{name: "label on the boot medium", sel: protocol.Target{Label: "images"}, im: small, err: ErrBootMedium, msg: "/dev/sdc2 on /dev/sdc"},
		{name: "label of a mounted partition", sel: protocol.Target{Label: "system"}, im: small, err: ErrInUse},
		{name: "label of a free partition on a busy disk", sel: protocol.Target{Label: "boot"}, im: small, want: "/dev/nvme0n1p1"},
		{name: "guid any case", sel: protocol.Target{GUID: strings.ToLower(guid2)}, im: big, want: "partition 2 of /dev/sda"},
		{name: "guid with braces is refused", sel: protocol.Target{GUID: "{" + guid2 + "}"}, im: big, err: ErrNoTarget, msg: "want a GPT partition GUID"},
		{name: "guid too small", sel: protocol.Target{GUID: guid1}, im: big, err: ErrTooSmall},
		{name: "partition number alone is refused", sel: protocol.Target{Partition: 2}, im: small, err: ErrNoTarget, msg: "partition goes with disk"},
		{name: "empty selector", sel: protocol.Target{}, im: small, err: ErrNoTarget},
		{name: "two selectors", sel: protocol.Target{Disk: "sda", Label: "EFI"}, im: small, err: ErrNoTarget},
		{name: "label and partition", sel: protocol.Target{Label: "EFI", Partition: 1}, im: small, err: ErrNoTarget},
	} {
		disks := tc.disks
		if disks == nil {
			disks = testDisks()
		}
		got, err := Choose(disks, tc.sel, tc.im)
		if tc.err != nil {
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s: Choose(%s, %s) = %v, want %v with %q", tc.name, tc.sel, tc.im.Name, err, tc.err, tc.msg)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("%s: Choose(%s, %s) = %s, %v; want %s", tc.name, tc.sel, tc.im.Name, got, err, tc.want)
		}
	}
}

func TestMap(t *testing.T) {
	disks := testDisks()
	sda := disks[4]
	for _, tc := range []struct {
		name string
		t    Target
		im   *imager.Image
		want []Place
		err  error
	}{
		{
			name: "partition images onto the disk's partitions",
			t:    Target{Disk: sda},
			im:   testImage("two", "gpt", imager.PartInfo{Number: 1, Size: 50 * MiB}, imager.PartInfo{Number: 2, Size: 300 * GiB}),
			want: []Place{
				{Number: 1, Path: "/dev/sda1", Size: 100 * MiB, Length: 50 * MiB},
				{Number: 2, Path: "/dev/sda", Offset: 101 * MiB, Size: 400 * GiB, Length: 300 * GiB},
			},
		},
		{
			name: "whole-disk image",
			t:    Target{Disk: sda},
			im:   testImage("whole", "", imager.PartInfo{Number: 0, Size: 100 * GiB}),
			want: []Place{{Path: "/dev/sda", Size: 500 * GiB, Length: 100 * GiB}},
		},
		{
			name: "one partition",
			t:    Target{Disk: sda, Part: &sda.Partitions[0]},
			im:   testImage("small", "", imager.PartInfo{Number: 3, Size: 50 * MiB}),
			want: []Place{{Number: 1, Path: "/dev/sda1", Size: 100 * MiB, Length: 50 * MiB}},
		},
		{name: "missing partition", t: Target{Disk: sda}, im: testImage("x", "gpt", imager.PartInfo{Number: 3, Size: MiB}), err: ErrNoTarget},
		{name: "partition smaller than the layout's", t: Target{Disk: sda}, im: testImage("x", "gpt", imager.PartInfo{Number: 1, Size: 200 * MiB}), err: ErrTooSmall},
		{name: "mounted partition", t: Target{Disk: disks[1]}, im: testImage("x", "gpt", imager.PartInfo{Number: 2, Size: MiB}), err: ErrInUse},
		{name: "whole-disk part among others", t: Target{Disk: sda}, im: testImage("x", "", imager.PartInfo{Number: 0, Size: MiB}, imager.PartInfo{Number: 1, Size: MiB}), err: ErrLayout},
	} {
		got, err := Map(tc.t, tc.im)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: Map() = %v, want %v", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Map() = %v", tc.name, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s: Map() (-want +got):\n%s", tc.name, d)
		}
	}
	if _, err := Paths([]Place{{Path: "/dev/sda1"}, {Path: "/dev/sda", Offset: MiB}}); err == nil {
		t.Errorf("Paths(a place at an offset) = nil error, want one pointing to OpenParts")
	}
	if got, err := Paths([]Place{{Path: "/dev/sda1"}, {Path: "/dev/sda2"}}); err != nil || !cmp.Equal(got, []string{"/dev/sda1", "/dev/sda2"}) {
		t.Errorf("Paths() = %v, %v", got, err)
	}
}

// TestCreateTableFile: on a disk image file the table is written, the
// places are offsets into the file, and OpenParts writes each part inside
// its partition and nowhere else.
func TestCreateTableFile(t *testing.T) {
	c := partitiontest.Machine(t)
	im := testImage("twoparts", "gpt",
		imager.PartInfo{Number: 1, Size: 3*MiB + 5, Type: efiType, Label: "ESP", GUID: guid1},
		imager.PartInfo{Number: 2, Start: 8 * MiB, Size: 4 * MiB, Label: "root"})
	disk := sparse(t, 32*MiB).Name()
	places, err := c.CreateTable(context.Background(), testlog.New(t), diskAt(t, c, disk), im)
	if err != nil {
		t.Fatal(err)
	}
	want := []Place{
		{Number: 1, Path: disk, Offset: MiB, Size: 3*MiB + 512, Length: 3*MiB + 5},
		{Number: 2, Path: disk, Offset: 8 * MiB, Size: 4 * MiB, Length: 4 * MiB},
	}
	if d := cmp.Diff(want, places); d != "" {
		t.Fatalf("CreateTable() places (-want +got):\n%s", d)
	}
	f, _ := os.Open(disk)
	tab, err := ReadTable(f, 32*MiB, 512)
	f.Close()
	if err != nil || len(tab.Partitions) != 2 || tab.Partitions[0].GUID != guid1 || tab.Partitions[1].Label != "root" {
		t.Fatalf("ReadTable() after CreateTable = %+v, %v", tab, err)
	}

	parts, closeAll, err := OpenParts(places)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		b := bytes.Repeat([]byte{byte('A' + i)}, int(p.Length))
		if n, err := p.RW.WriteAt(b, 0); err != nil || n != len(b) {
			t.Fatalf("part %d: WriteAt = %d, %v", i, n, err)
		}
	}
	if _, err := parts[0].RW.WriteAt([]byte("x"), places[0].Size); err == nil {
		t.Errorf("WriteAt past partition 1's end = nil error, want a refusal")
	}
	if err := closeAll(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(disk)
	for i, pl := range places {
		seg := data[pl.Offset : pl.Offset+pl.Length]
		if !bytes.Equal(seg, bytes.Repeat([]byte{byte('A' + i)}, int(pl.Length))) {
			t.Errorf("partition %d does not hold its part", pl.Number)
		}
		if rest := data[pl.Offset+pl.Length : pl.Offset+pl.Size]; !bytes.Equal(rest, make([]byte, len(rest))) {
			t.Errorf("partition %d: bytes after the part were written", pl.Number)
		}
	}
	if gap := data[places[0].Offset+places[0].Size : places[1].Offset]; !bytes.Equal(gap, make([]byte, len(gap))) {
		t.Errorf("bytes between the partitions were written")
	}
}

func TestCreateTableRefuses(t *testing.T) {
	c := partitiontest.Machine(t)
	win11 := testImage("win11", "gpt", imager.PartInfo{Number: 1, Size: 100 * MiB}, imager.PartInfo{Number: 2, Size: 200 * MiB})
	for _, tc := range []struct {
		name string
		size int64
		im   *imager.Image
		err  error
		msg  string
	}{
		{"too small", 256 * MiB, win11, ErrTooSmall, "is smaller than image win11 (301.0MiB): pick a larger disk or a smaller image"},
		{"no table in the image", GiB, testImage("raw", "", imager.PartInfo{Number: 0, Size: MiB}), ErrLayout, "no partition table to create"},
		{"mbr with five", GiB, testImage("five", "mbr", imager.PartInfo{Number: 1, Size: MiB}, imager.PartInfo{Number: 5, Size: MiB}), ErrLayout, "primary partitions 1-4"},
	} {
		f := sparse(t, tc.size)
		_, err := c.CreateTable(context.Background(), testlog.New(t), diskAt(t, c, f.Name()), tc.im)
		if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: CreateTable() = %v, want %v with %q", tc.name, err, tc.err, tc.msg)
		}
		b := make([]byte, 2*MiB)
		f.ReadAt(b, 0)
		if !bytes.Equal(b, make([]byte, len(b))) {
			t.Errorf("%s: CreateTable refused but wrote to the disk", tc.name)
		}
	}
}

// TestCreateTableThenFetch: a real image (imager.Create from two partition
// files) fetched from a seeder through OpenParts lands in the partitions
// CreateTable made in a disk image file.
func TestCreateTableThenFetch(t *testing.T) {
	im, srcs := realImage(t)
	c := partitiontest.Machine(t)
	disk := sparse(t, 64*MiB).Name()
	places, err := c.CreateTable(context.Background(), testlog.New(t), diskAt(t, c, disk), im)
	if err != nil {
		t.Fatal(err)
	}
	parts, closeAll, err := OpenParts(places)
	if err != nil {
		t.Fatal(err)
	}
	fetchParts(t, im, srcs, func(cfg *imager.Config) { cfg.Parts = parts })
	if err := closeAll(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(disk)
	for i, pl := range places {
		want, _ := os.ReadFile(srcs[i])
		if !bytes.Equal(data[pl.Offset:pl.Offset+pl.Length], want) {
			t.Errorf("partition %d at %d does not hold %s", pl.Number, pl.Offset, srcs[i])
		}
	}
}

// realImage hashes two partition files into an image torrent with a GPT
// layout.
func realImage(t *testing.T) (*imager.Image, []string) {
	t.Helper()
	dir := t.TempDir()
	var srcs []string
	for i, n := range []int{3<<20 + 12345, 5 << 20} {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(j*7 + i*13 + j>>11)
		}
		p := filepath.Join(dir, "p"+string(rune('1'+i))+".img")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, p)
	}
	im, err := imager.Create(context.Background(), testlog.New(t), imager.CreateConfig{
		Name: "parttest", Sources: srcs, Table: "gpt", PieceLength: 1 << 20,
		Parts: []imager.PartInfo{
			{Number: 1, Size: 4 * MiB, Type: efiType, Label: "ESP", GUID: guid1},
			{Number: 2, Size: 8 * MiB, Label: "root", GUID: guid2},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return im, srcs
}

// fetchParts seeds im from srcs and fetches it into the targets set by
// target, over loopback.
func fetchParts(t *testing.T, im *imager.Image, srcs []string, target func(*imager.Config)) {
	t.Helper()
	seed := imager.Config{Listen: "127.0.0.1:0", ProgressEvery: 200 * time.Millisecond}
	seed.Image, seed.Paths, seed.Mode, seed.Trackers = im, srcs, imager.ModeSeed, []string{}
	s, err := seed.Join(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg := imager.Config{Listen: "127.0.0.1:0", ProgressEvery: 200 * time.Millisecond}
	cfg.Image, cfg.Mode, cfg.Trackers, cfg.Peers = im, imager.ModeFresh, []string{}, []string{s.ListenAddr()}
	target(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cfg.Run(ctx, testlog.New(t), 0); err != nil {
		t.Fatalf("fetch: %v", err)
	}
}

// diskAt describes the disk at path as the agent's listing would.
func diskAt(t testing.TB, c Config, path string) Disk {
	t.Helper()
	d, err := c.Disk(testlog.New(t), path)
	if err != nil {
		t.Fatalf("Disk(%s) = %v", path, err)
	}
	return d
}
