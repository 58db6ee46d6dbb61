package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/loopdev"
	"github.com/pxeswarm/pxeswarm/internal/testnet"
)

// zeroedIslands makes a 40 MiB file of zeros holding four islands of
// random bytes, each a whole number of 4 KiB blocks, with long zero runs
// between: a partition zero-filled before a system without a filesystem
// pxeswarm reads was written to it.
func zeroedIslands(t *testing.T) (string, []imager.Extent) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "zeroed.img")
	if err := os.WriteFile(src, make([]byte, 40<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	islands := []imager.Extent{{Off: 0, Len: 64 << 10}, {Off: 5 << 20, Len: 300 << 10}, {Off: 20 << 20, Len: 1 << 20}, {Off: 39 << 20, Len: 1 << 20}}
	for i, is := range islands {
		fstest.Fill(t, src, is.Off, is.Len, uint64(i+1))
	}
	return src, islands
}

// TestMktorrentZeroRuns: `pxeswarm mktorrent` on a source no filesystem
// reader knows leaves out its zero runs: it says what it found, the
// torrent's extents are the islands of data, a seeder serves them and a
// fetch onto a new (zero) target makes the source byte for byte; random
// bytes ship whole, and so does --raw.
func TestMktorrentZeroRuns(t *testing.T) {
	src, islands := zeroedIslands(t)
	img := &image{dir: t.TempDir(), parts: []string{src}, sums: []string{fileSHA1(t, src)}}
	img.announce = "http://127.0.0.1:" + strconv.Itoa(testnet.FreePort(t)) + "/announce"
	img.torrent = filepath.Join(img.dir, "zeros.torrent")
	out, err := run(t, "mktorrent", "--piece-size", "256KiB", "--tracker", img.announce, "-o", img.torrent, src)
	if err != nil {
		t.Fatalf("mktorrent: %v\n%s", err, out)
	}
	re := regexp.MustCompile(`(?m)^part zeroed\.img: unknown filesystem: 2\.4MiB non-zero of 40MiB, 4 extents; zero runs are zeroed on targets$`)
	if !re.MatchString(out) {
		t.Errorf("mktorrent output has no %q:\n%s", re, out)
	}
	if img.im, err = imager.LoadFile(img.torrent); err != nil {
		t.Fatal(err)
	}
	p := img.im.Files[0].Part
	if got := []imager.Extent(p.Extents); p.Gaps != imager.GapsZero || p.Filesystem != "" || !equalExtents(got, islands) {
		t.Errorf("layout: extents %v, gaps %q, filesystem %q; want the islands %v, zero gaps, no filesystem", got, p.Gaps, p.Filesystem, islands)
	}
	seed := img.seed(t, img.parts, true)
	target := filepath.Join(t.TempDir(), "target.img")
	f := start(t, fetchArgs(img, []string{target})...)
	if err := f.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	img.checkSame(t, []string{target})
	if got := f.received(t); got > img.im.Length+img.im.Length/20 {
		t.Errorf("fetch received %d bytes, want about the %d non-zero", got, img.im.Length)
	}
	seed.cmd.Process.Signal(os.Interrupt)
	seed.wait(t, 30*time.Second)

	for _, tc := range []struct {
		name string
		src  string
		args []string
	}{
		{"random", fstest.RandomFile(t, "random.img", 8<<20, 3), nil},
		{"raw", src, []string{"--raw"}},
	} {
		out := filepath.Join(t.TempDir(), "whole.torrent")
		res, err := run(t, append(append([]string{"mktorrent", "-o", out}, tc.args...), tc.src)...)
		if err != nil {
			t.Fatalf("mktorrent %s: %v\n%s", tc.name, err, res)
		}
		im, err := imager.LoadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(tc.src)
		if p := im.Files[0].Part; len(p.Extents) != 0 || p.Gaps != "" || im.Length != st.Size() || strings.Contains(res, "zero runs are zeroed") {
			t.Errorf("mktorrent %s: %d extents, gaps %q, length %d of %d; want it whole, no zero summary:\n%s", tc.name, len(p.Extents), p.Gaps, im.Length, st.Size(), res)
		}
	}
}

func equalExtents(a, b []imager.Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var sparseRe = regexp.MustCompile(`(?m)^sparse: (\S+): (\S+) allocated, (\S+) after punching (\d+) gaps \((\S+)\)$`)

// TestMktorrentSparse: `pxeswarm mktorrent --sparse` on an ext4 image
// made over random bytes: the same torrent as without --sparse, and the
// file's allocated bytes (st_blocks) drop from its whole size to about
// what ext4 uses; e2fsck finds it clean and every file reads back; and a
// seeder of the punched file serves the image to targets that hold random
// bytes, which check clean (every piece a fetch receives is verified).
func TestMktorrentSparse(t *testing.T) {
	part := fsPart{kind: "ext4", size: 160 << 20, make: fstest.MakeExt, args: []string{"-t", "ext4"}, files: 32, maxFile: 1000 << 10} // ~15% used
	img := makeFSImage(t, "", part)
	src := img.parts[0]
	allocBefore := allocatedBytes(t, src)
	again := filepath.Join(t.TempDir(), "sparse.torrent")
	out, err := run(t, "mktorrent", "--piece-size", "256KiB", "--tracker", img.announce, "--sparse", "-o", again, src)
	if err != nil {
		t.Fatalf("mktorrent --sparse: %v\n%s", err, out)
	}
	m := sparseRe.FindStringSubmatch(out)
	if m == nil || m[1] != src {
		t.Fatalf("mktorrent --sparse output has no %q for %s:\n%s", sparseRe, src, out)
	}
	im2, err := imager.LoadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	if im2.InfoHash != img.im.InfoHash {
		t.Errorf("--sparse made infohash %s, want %s as without it", im2.InfoHash.HexString(), img.im.InfoHash.HexString())
	}
	after, length := allocatedBytes(t, src), img.im.Files[0].Length
	t.Logf("%s; st_blocks: %d bytes before, %d after, for %d used (ext4 counts %d, %.1f%% of %d)", m[0], allocBefore, after, length, img.used[0],
		100*float64(img.used[0])/float64(part.size), part.size)
	// The free space (random bytes: allocated) is freed; what stays is
	// about the used bytes (see imager's TestPunchGaps).
	if free := part.size - length; allocBefore-after < free-free/10 {
		t.Errorf("--sparse freed %d bytes (%d before, %d after), want about the %d of free space", allocBefore-after, allocBefore, after, free)
	}
	if slack := int64(8192*len(img.im.Files[0].Part.Extents)) + 1<<20; after > length+slack || after < length/2 {
		t.Errorf("after --sparse: %d bytes allocated, want about the %d used (at most %d more)", after, length, slack)
	}
	if want := fmt.Sprintf("%s allocated, %s after", bytesize.Format(allocBefore), bytesize.Format(after)); !strings.Contains(m[0], want) {
		t.Errorf("mktorrent --sparse printed %q, want %q as st_blocks says", m[0], want)
	}
	img.vols[0].Check(t, src)

	seed := img.seed(t, img.parts, true)
	targets, before := img.randomTargets(t, 2000)
	f := start(t, fetchArgs(img.image, targets)...)
	if err := f.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("fetch from the punched file: %v", err)
	}
	img.check(t, targets, before)
	seed.cmd.Process.Signal(os.Interrupt)
	seed.wait(t, 30*time.Second)
}

// TestMktorrentSparseRefuses: --sparse on a block device (a loop device)
// is refused before hashing, with what to do, and leaves the device and
// the torrent path alone; --sparse with --raw is a usage error.
func TestMktorrentSparseRefuses(t *testing.T) {
	backing := fstest.RandomFile(t, "disk.img", 4<<20, 8)
	sum := fileSHA1(t, backing)
	loop := loopdev.Attach(t, backing, false)
	out := filepath.Join(t.TempDir(), "x.torrent")
	res, err := run(t, "mktorrent", "--sparse", "-o", out, loop)
	if err == nil || !strings.Contains(res, "is a block device") || !strings.Contains(res, "leave out --sparse") {
		t.Errorf("mktorrent --sparse %s: err %v, output %q; want it refused as a block device, with what to do", loop, err, res)
	}
	if strings.Contains(res, "hashing image") {
		t.Errorf("mktorrent --sparse %s hashed before refusing:\n%s", loop, res)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("mktorrent --sparse %s wrote %s", loop, out)
	}
	if got := fileSHA1(t, backing); got != sum {
		t.Errorf("the loop device's bytes changed")
	}
	res, err = run(t, "mktorrent", "--sparse", "--raw", "-o", out, backing)
	if err == nil || !strings.Contains(res, "--raw") {
		t.Errorf("mktorrent --sparse --raw: err %v, output %q; want a usage error", err, res)
	}
}

// allocatedBytes is the bytes the file system has allocated to path
// (st_blocks × 512).
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}
