package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/testnet"
)

// fsPart is one partition image of a used-block test: a filesystem made
// with its own tools.
type fsPart struct {
	kind string // what mktorrent must name: "ext4", "fat32", "ntfs" ...
	size int64
	make func(t testing.TB, img string, fs fstest.Files, args ...string) *fstest.Volume
	args []string
	// files and maxFile size the random files (about a fifth of size
	// used, after deletions).
	files, maxFile int
}

var (
	ext4Part  = fsPart{kind: "ext4", size: 96 << 20, make: fstest.MakeExt, args: []string{"-t", "ext4"}, files: 48, maxFile: 1200 << 10}
	fat32Part = fsPart{kind: "fat32", size: 96 << 20, make: fstest.MakeFAT, args: []string{"-F", "32"}, files: 48, maxFile: 1200 << 10}
	ntfsPart  = fsPart{kind: "ntfs", size: 96 << 20, make: fstest.MakeNTFS, files: 48, maxFile: 1200 << 10}
)

// fsImage is a used-block image of real filesystems: the partition
// images, what they hold, the bytes each filesystem's own tools count as
// used, and the torrent `pxeswarm mktorrent` made of them by default.
type fsImage struct {
	*image
	vols []*fstest.Volume
	used []int64
	out  string // what mktorrent printed
}

// makeFSImage makes the partition images (over random bytes) and runs
// `pxeswarm mktorrent` on them with table, then checks what it printed
// and that each part ships about what its filesystem uses.
func makeFSImage(t *testing.T, table string, parts ...fsPart) *fsImage {
	t.Helper()
	img := &fsImage{image: &image{dir: t.TempDir()}}
	for i, p := range parts {
		src := fstest.RandomFile(t, fmt.Sprintf("%s%d.img", p.kind, i+1), p.size, uint64(i+1))
		v := p.make(t, src, fstest.NewFiles(t, p.files, p.maxFile), p.args...)
		img.parts, img.vols = append(img.parts, src), append(img.vols, v)
		img.used = append(img.used, v.Used(t, src))
	}
	img.announce = fmt.Sprintf("http://127.0.0.1:%d/announce", testnet.FreePort(t))
	img.torrent = filepath.Join(img.dir, "image.torrent")
	args := []string{"mktorrent", "--piece-size", "256KiB", "--tracker", img.announce, "-o", img.torrent}
	if table != "" {
		args = append(args, "--table", table)
	}
	out, err := run(t, append(args, img.parts...)...)
	if err != nil {
		t.Fatalf("mktorrent: %v\n%s", err, out)
	}
	img.out = out
	if img.im, err = imager.LoadFile(img.torrent); err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		f := img.im.Files[i]
		re := regexp.MustCompile(`(?m)^part ` + regexp.QuoteMeta(f.Path) + `: ` + p.kind + `, \S+ used of \S+ in \d+ extents: only those are shipped$`)
		if !re.MatchString(out) {
			t.Errorf("mktorrent output has no %q:\n%s", re, out)
		}
		t.Logf("part %d (%s): torrent file %d bytes, the filesystem's tools count %d used (%.1f%% of %d), %d extents",
			i+1, p.kind, f.Length, img.used[i], 100*float64(img.used[i])/float64(p.size), p.size, len(f.Part.Extents))
		if f.Part.Filesystem != p.kind || f.Part.Gaps != imager.GapsFree || len(f.Part.Extents) < 2 || f.Part.Size != p.size {
			t.Errorf("part %d layout: filesystem %q, gaps %q, %d extents, size %d; want %s, free gaps, at least two extents (a gap between), size %d",
				i+1, f.Part.Filesystem, f.Part.Gaps, len(f.Part.Extents), f.Part.Size, p.kind, p.size)
		}
		// Never less than the filesystem uses; a little more is fine
		// (NTFS's backup boot sector, ext's inode tables of empty
		// groups are counted by both, ...).
		if f.Length < img.used[i] || f.Length > img.used[i]+img.used[i]/20 {
			t.Errorf("part %d (%s): torrent file is %d bytes, want the %d bytes the filesystem uses (at most 5%% more)", i+1, p.kind, f.Length, img.used[i])
		}
	}
	return img
}

// randomTargets are one target file per part, of the part's size,
// holding random bytes (other than the sources' own), and a copy of each
// to compare the free space with afterwards.
func (img *fsImage) randomTargets(t *testing.T, seed uint64) (targets, before []string) {
	t.Helper()
	for i, f := range img.im.Files {
		targets = append(targets, fstest.RandomFile(t, fmt.Sprintf("target-p%d.img", i+1), f.Part.Size, seed+uint64(i)))
		before = append(before, fstest.RandomFile(t, fmt.Sprintf("before-p%d.img", i+1), f.Part.Size, seed+uint64(i)))
	}
	return targets, before
}

// check checks each target: its filesystem is clean and every file reads
// back; and the bytes outside the part's extents (free space) are what
// before holds there: left alone.
func (img *fsImage) check(t *testing.T, targets, before []string) {
	t.Helper()
	for i, tg := range targets {
		img.vols[i].Check(t, tg)
		if before == nil {
			continue
		}
		a, b := fstest.Open(t, tg), fstest.Open(t, before[i])
		f := img.im.Files[i]
		for _, g := range f.Part.Extents.Gaps(f.Part.Size) {
			if !fstest.SameRange(t, a, g.Off, b, g.Off, g.Len) {
				t.Errorf("target %d: free space at %d (+%d) was written", i+1, g.Off, g.Len)
				break
			}
		}
	}
}

func (img *fsImage) usedTotal() int64 {
	var n int64
	for _, u := range img.used {
		n += u
	}
	return n
}

// TestSwarmUsedBlocks: for an ext4, a FAT32 and an NTFS partition, and
// an ESP (FAT) plus ext4 GPT image, `pxeswarm mktorrent` ships only the
// used blocks; a seeder serves them through the swarm; `pxeswarm fetch`
// writes them onto targets that hold random bytes; the filesystem's own
// checker finds each target clean, every file reads back identical, the
// free space is left as it was, and the fetch received no more than 5%
// over the bytes the filesystems use. Then `--check verify` on those
// targets finds the image there and receives nothing.
func TestSwarmUsedBlocks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		table string
		parts []fsPart
	}{
		{"ext4", "", []fsPart{ext4Part}},
		{"fat32", "", []fsPart{fat32Part}},
		{"ntfs", "", []fsPart{ntfsPart}},
		{"esp-ext4-gpt", "gpt", []fsPart{
			{kind: "fat16", size: 32 << 20, make: fstest.MakeFAT, args: []string{"-F", "16"}, files: 16, maxFile: 800 << 10},
			{kind: "ext4", size: 64 << 20, make: fstest.MakeExt, args: []string{"-t", "ext4"}, files: 32, maxFile: 1000 << 10},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := makeFSImage(t, tc.table, tc.parts...)
			if tc.table != "" && img.im.Layout.Table != tc.table {
				t.Errorf("layout table %q, want %q", img.im.Layout.Table, tc.table)
			}
			seed := img.seed(t, img.parts, true)
			targets, before := img.randomTargets(t, 1000)
			f := start(t, fetchArgs(img.image, targets)...)
			if err := f.wait(t, 2*time.Minute); err != nil {
				t.Fatalf("fetch: %v", err)
			}
			img.check(t, targets, before)
			got, used := f.received(t), img.usedTotal()
			var size int64
			for _, f := range img.im.Files {
				size += f.Part.Size
			}
			t.Logf("fetch received %d bytes for %d used (%.3f×), of %d bytes of partitions", got, used, float64(got)/float64(used), size)
			if got > used+used/20 {
				t.Errorf("fetch received %d bytes, want at most 5%% over the %d the filesystems use", got, used)
			}

			// The targets hold the image: verify finds every piece there.
			v := start(t, fetchArgs(img.image, targets, "--check", "verify")...)
			if err := v.wait(t, time.Minute); err != nil {
				t.Fatalf("fetch --check verify: %v", err)
			}
			if got := v.received(t); got != 0 {
				t.Errorf("verify on targets holding the image received %d bytes, want 0", got)
			}
			img.check(t, targets, before)
			seed.cmd.Process.Signal(os.Interrupt)
			seed.wait(t, 30*time.Second)
		})
	}
}

// TestFetchDiscard: `pxeswarm fetch --discard` of an ext4 used-block
// image onto a target file that holds random bytes: the filesystem
// checks clean and reads every file back, and its free space reads zero
// (punched holes), where without --discard (TestSwarmUsedBlocks) it
// keeps the old bytes.
func TestFetchDiscard(t *testing.T) {
	img := makeFSImage(t, "", ext4Part)
	seed := img.seed(t, img.parts, true)
	targets, _ := img.randomTargets(t, 2000)
	f := start(t, fetchArgs(img.image, targets, "--discard")...)
	if err := f.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("fetch --discard: %v", err)
	}
	img.check(t, targets, nil)
	part := img.im.Files[0].Part
	got, zero := fstest.Open(t, targets[0]), bytes.NewReader(make([]byte, part.Size))
	for _, g := range part.Extents.Gaps(part.Size) {
		if !fstest.SameRange(t, got, g.Off, zero, g.Off, g.Len) {
			t.Errorf("free space at %d (+%d) is not zero after fetch --discard", g.Off, g.Len)
			break
		}
	}
	seed.cmd.Process.Signal(os.Interrupt)
	seed.wait(t, 30*time.Second)
}

// TestMktorrentUsedBlocksRefuses: through `pxeswarm mktorrent`, a
// hibernated NTFS and a BitLocker volume are refused with what to do (no
// torrent written), and --raw ships them whole; an unknown filesystem
// ships whole without being asked.
func TestMktorrentUsedBlocksRefuses(t *testing.T) {
	const size = 16 << 20
	ntfs := func(t *testing.T) string {
		img := fstest.RandomFile(t, "ntfs.img", size, 5)
		fstest.MakeNTFS(t, img, fstest.NewFiles(t, 8, 64<<10))
		return img
	}
	whole := func(t *testing.T, src string, args ...string) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "whole.torrent")
		res, err := run(t, append(append([]string{"mktorrent", "-o", out}, args...), src)...)
		if err != nil {
			t.Fatalf("mktorrent %s: %v\n%s", strings.Join(args, " "), err, res)
		}
		im, err := imager.LoadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if p := im.Files[0].Part; im.Length != size || len(p.Extents) != 0 || p.Gaps != "" || p.Filesystem != "" {
			t.Errorf("mktorrent %s: length %d, %d extents, gaps %q, filesystem %q; want the whole %d bytes, no extents",
				strings.Join(args, " "), im.Length, len(p.Extents), p.Gaps, p.Filesystem, size)
		}
		if strings.Contains(res, "only those are shipped") {
			t.Errorf("mktorrent %s printed a used-block summary:\n%s", strings.Join(args, " "), res)
		}
	}
	for _, tc := range []struct {
		name string
		make func(t *testing.T) string
		want []string
	}{
		{"hibernated", func(t *testing.T) string { img := ntfs(t); fstest.Hibernate(t, img, "hibr"); return img },
			[]string{"hibernated", "shutdown /s /f /t 0", "--raw"}},
		{"bitlocker", func(t *testing.T) string { img := ntfs(t); fstest.BitLocker(t, img); return img },
			[]string{"BitLocker", "manage-bde -off", "--raw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.make(t)
			out := filepath.Join(t.TempDir(), "x.torrent")
			res, err := run(t, "mktorrent", "-o", out, src)
			if err == nil {
				t.Errorf("mktorrent on a %s volume succeeded, want it refused", tc.name)
			}
			for _, w := range tc.want {
				if !strings.Contains(res, w) {
					t.Errorf("mktorrent on a %s volume said %q, want it to mention %q", tc.name, res, w)
				}
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("mktorrent on a %s volume wrote %s", tc.name, out)
			}
			whole(t, src, "--raw")
		})
	}
	t.Run("unknown", func(t *testing.T) {
		whole(t, fstest.RandomFile(t, "random.img", size, 6))
	})
}
