package imager

import (
	"bytes"
	"context"
	"crypto/sha1"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/loopdev"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/usedmap"
)

const miB = 1 << 20

// island is a range of non-zero bytes in a test source.
type island struct{ off, n int64 }

// islandFile makes a file of size bytes that holds random non-zero bytes
// in the islands and zeros elsewhere: written as zeros (a partition
// zero-filled before capture), or left as holes (sparse).
func islandFile(t testing.TB, path string, size int64, islands []island, sparse bool, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if sparse {
		err = f.Truncate(size)
	} else {
		zero := make([]byte, miB)
		for off := int64(0); off < size && err == nil; off += miB {
			_, err = f.WriteAt(zero[:min(miB, size-off)], off)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	for _, is := range islands {
		b := make([]byte, is.n)
		for i := range b {
			b[i] = byte(rng.Uint32()) | 1 // never zero
		}
		if _, err := f.WriteAt(b, is.off); err != nil {
			t.Fatal(err)
		}
	}
}

// refExtents is what zero detection must find in content, worked out
// block by block on the bytes themselves (no holes, no streams): the
// non-zero ranges once runs of whole zero 4 KiB blocks of 1 MiB or more
// are taken out, or nil when those runs hold under 1/32 of it.
func refExtents(content []byte) Extents {
	size := int64(len(content))
	var gaps Extents
	var run, runOff int64
	end := func() {
		if run >= MinZeroRun {
			gaps = append(gaps, Extent{Off: runOff, Len: run})
		}
		run = 0
	}
	for off := int64(0); off < size; off += ZeroBlock {
		blk := content[off:min(off+ZeroBlock, size)]
		if bytes.Count(blk, []byte{0}) == len(blk) {
			if run == 0 {
				runOff = off
			}
			run += int64(len(blk))
			continue
		}
		end()
	}
	end()
	if gaps.Total()*zeroShare < size {
		return nil
	}
	if gaps.Total() == size {
		return Extents{{Off: 0, Len: ZeroBlock}}
	}
	return gaps.Gaps(size)
}

// verifyAll hashes every piece of im from srcs as a seeder reads them
// (OpenSources, SourceParts: through the extents) with the hasher the
// sessions verify targets with, and checks that the gaps of each zero
// part read as zeros in its source: so a target that gets the extents and
// zeroes the gaps holds the source.
func verifyAll(t *testing.T, im *Image, srcs []string) {
	t.Helper()
	devs, err := im.OpenSources(srcs)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	var bad atomic.Int64
	if err := hashPieces(context.Background(), newSpan(im.SourceParts(devs)), im.Length, im.PieceLength, 2, nil, func(i int, sum [sha1.Size]byte) {
		if sum != im.PieceHash(i) {
			bad.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if n := bad.Load(); n > 0 {
		t.Errorf("%d of %d pieces of %s differ from the torrent when read from the sources", n, im.NumPieces(), im.Name)
	}
	for i, f := range im.Files {
		if f.Part.Gaps != GapsZero {
			continue
		}
		for _, g := range f.Part.Extents.Gaps(f.Part.Size) {
			b := make([]byte, g.Len)
			if _, err := devs[i].ReadAt(b, g.Off); err != nil {
				t.Fatal(err)
			}
			if bytes.Count(b, []byte{0}) != len(b) {
				t.Errorf("part %d: gap %d (+%d) of %s is not all zero", i+1, g.Off, g.Len, srcs[i])
			}
		}
	}
}

// islands40 lay out a 40 MiB source: unaligned islands, islands that
// straddle blocks, zero runs just under, at and over 1 MiB, a run under
// 1 MiB between two islands (kept inside one extent), and an island at
// the very end.
var islands40 = []island{
	{0, 100},
	{3*miB + 123, 5000},
	{3*miB + 123 + 5000 + 512<<10, 4096}, // 512 KiB of zeros before it: one extent with the previous
	{8 * miB, miB},
	{9*miB + miB, 4096},             // exactly 1 MiB of zeros before it: a gap
	{10*miB + 4096 + miB - 4096, 1}, // 1 MiB less a block of zeros before it: no gap
	{12*miB - 1, 2},                 // across a block boundary
	{20*miB + 4096, 4096},
	{40*miB - 10, 10},
}

// TestCreateZeroRuns: for sources no filesystem reader knows, Create
// leaves out the zero runs of 1 MiB and more at 4 KiB blocks: the
// layout's extents are exactly those refExtents works out from the bytes,
// with zero gaps and no filesystem named; every piece verifies against
// the sources read through the extents, and the gaps read zero; a sparse
// source gives the same extents, and its holes are not read; a random
// source, one with too few zeros, and --raw ship whole; an all-zero one
// ships one block.
func TestCreateZeroRuns(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	islandFile(t, path("zeroed.img"), 40*miB, islands40, false, 1)
	islandFile(t, path("sparse.img"), 40*miB, islands40, true, 1)
	islandFile(t, path("allzero.img"), 3*miB, nil, false, 1)
	writeRandom(t, path("random.img"), 8*miB+777, 2)
	// A run of 1.25 MiB of zeros in 48 MiB of random bytes: under 1/32.
	writeRandom(t, path("fewzeros.img"), 48*miB, 3)
	fh, err := os.OpenFile(path("fewzeros.img"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt(make([]byte, 5*miB/4), 20*miB+4096); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	// 640 MiB, of which the first 40 hold the islands and the rest is a
	// hole: the default piece size goes by what is outside the holes
	// (256 KiB), not by the size (512 KiB).
	islandFile(t, path("bigsparse.img"), 640*miB, islands40, true, 1)

	for _, tc := range []struct {
		name    string
		sources []string
		raw     bool
		piece   int64
	}{
		{"zero-filled", []string{"zeroed.img"}, false, 256 << 10},
		{"sparse", []string{"sparse.img"}, false, 256 << 10},
		{"random", []string{"random.img"}, false, 256 << 10},
		{"few zeros", []string{"fewzeros.img"}, false, 256 << 10},
		{"all zero", []string{"allzero.img"}, false, 256 << 10},
		{"raw", []string{"zeroed.img"}, true, 256 << 10},
		// Pieces straddle the parts, and the streams fork and join
		// mid-piece.
		{"several", []string{"random.img", "zeroed.img", "fewzeros.img", "sparse.img", "allzero.img"}, false, 1 << 20},
		{"default piece size", []string{"bigsparse.img"}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srcs []string
			for _, s := range tc.sources {
				srcs = append(srcs, path(s))
			}
			im, err := Create(context.Background(), testlog.New(t), CreateConfig{Name: "zeros", Sources: srcs, PieceLength: tc.piece, Raw: tc.raw})
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range im.Files {
				content, err := os.ReadFile(srcs[i])
				if err != nil {
					t.Fatal(err)
				}
				want := refExtents(content)
				if tc.raw {
					want = nil
				}
				if diff := cmp.Diff(want, f.Part.Extents, cmp.Comparer(func(a, b Extents) bool { return len(a) == 0 && len(b) == 0 || cmp.Equal([]Extent(a), []Extent(b)) })); diff != "" {
					t.Errorf("part %d (%s) extents (-want +got):\n%s", i+1, tc.sources[i], diff)
				}
				wantGaps, wantLen := "", int64(len(content))
				if len(want) > 0 {
					wantGaps, wantLen = GapsZero, want.Total()
				}
				if f.Part.Gaps != wantGaps || f.Part.Filesystem != "" || f.Length != wantLen || f.Part.Size != int64(len(content)) {
					t.Errorf("part %d (%s): gaps %q, filesystem %q, length %d, size %d; want gaps %q, no filesystem, length %d, size %d",
						i+1, tc.sources[i], f.Part.Gaps, f.Part.Filesystem, f.Length, f.Part.Size, wantGaps, wantLen, len(content))
				}
				t.Logf("part %d (%s): %d extents, %d of %d bytes", i+1, tc.sources[i], len(f.Part.Extents), f.Length, len(content))
			}
			if tc.piece == 0 {
				// Picked by what the source holds outside its holes.
				if want := PieceLengthFor(im.Length); im.PieceLength != want || want == PieceLengthFor(im.Files[0].Part.Size) {
					t.Errorf("piece length %d, want %d (PieceLengthFor the %d bytes outside holes, not the %d of the source)",
						im.PieceLength, want, im.Length, im.Files[0].Part.Size)
				}
			}
			verifyAll(t, im, srcs)
		})
	}
	// The islands were chosen so that each rule shows.
	content, _ := os.ReadFile(path("zeroed.img"))
	if n := len(refExtents(content)); n != 6 {
		t.Errorf("refExtents of the 40 MiB islands: %d extents, want 6 (the test's layout changed?)", n)
	}
}

// TestCreateZeroRunsCapped: past the extent cap, the extents are merged
// across the smallest zero runs (as usedmap.Merge) and the source is
// hashed again: still every piece verifies, and the pieces of the source
// before it are kept.
func TestCreateZeroRunsCapped(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "zeroed.img")
	islandFile(t, src, 40*miB, islands40, false, 1)
	before := filepath.Join(dir, "before.img")
	writeRandom(t, before, 3*miB+5, 9)
	content, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	im, err := Create(context.Background(), testlog.New(t), CreateConfig{Name: "capped", Sources: []string{before, src}, PieceLength: 256 << 10, maxExtents: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := capExtents(refExtents(content), 3)
	got := im.Files[1].Part.Extents
	if len(want) != 3 || !cmp.Equal([]Extent(want), []Extent(got)) {
		t.Errorf("capped extents = %v, want %v (3, merged across the smallest runs)", got, want)
	}
	verifyAll(t, im, []string{before, src})
}

// TestCreateUnknownFilesystemNotGuessed: a filesystem usedmap does not
// read (a cramfs, compressed, at the start of a zero-filled partition) is
// not guessed at: the part's extents are where the bytes are not zero,
// with no filesystem named, and the cramfs reads back from the extents
// laid out over zeros.
func TestCreateUnknownFilesystemNotGuessed(t *testing.T) {
	needs.Tool(t, "mkfs.cramfs")
	dir := t.TempDir()
	files := fstest.NewFiles(t, 12, 300<<10)
	cram := filepath.Join(dir, "cram.img")
	fstest.Run(t, "mkfs.cramfs", files.Dir, cram)
	cb, err := os.ReadFile(cram)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "part.img")
	const size = 24 * miB
	if err := os.WriteFile(src, append(cb, make([]byte, size-len(cb))...), 0o644); err != nil {
		t.Fatal(err)
	}
	if m, err := usedmap.Detect(bytes.NewReader(append(cb, make([]byte, size-len(cb))...)), size); err != nil || m.Kind != usedmap.Unknown {
		t.Fatalf("usedmap.Detect(cramfs) = %v, %v; want it unknown (this test needs a filesystem usedmap does not read)", m.Kind, err)
	}
	im, err := Create(context.Background(), testlog.New(t), CreateConfig{Name: "cramfs", Sources: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	content, _ := os.ReadFile(src)
	p := im.Files[0].Part
	if want := refExtents(content); !cmp.Equal([]Extent(want), []Extent(p.Extents)) || p.Gaps != GapsZero || p.Filesystem != "" {
		t.Errorf("cramfs part: extents %v, gaps %q, filesystem %q; want %v, zero gaps, no filesystem", p.Extents, p.Gaps, p.Filesystem, want)
	}
	if end := p.Extents[len(p.Extents)-1].End(); end < int64(len(cb)) || end > int64(len(cb))+ZeroBlock {
		t.Errorf("extents end at %d, want the cramfs's %d bytes rounded up to a block", end, len(cb))
	}
	verifyAll(t, im, []string{src})
	// A target that had random bytes, given the extents and zeroed gaps,
	// holds the cramfs: its own bytes and zeros after.
	target := filepath.Join(dir, "target.img")
	writeRandom(t, target, size, 5)
	tf, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	sf, _ := os.Open(src)
	defer sf.Close()
	packed := make([]byte, im.Length)
	if _, err := OnExtents(sf, p.Extents).ReadAt(packed, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := OnExtents(tf, p.Extents).WriteAt(packed, 0); err != nil {
		t.Fatal(err)
	}
	for _, g := range p.Extents.Gaps(p.Size) {
		tf.WriteAt(make([]byte, g.Len), g.Off)
	}
	tf.Close()
	got, _ := os.ReadFile(target)
	if !bytes.Equal(got, content) {
		t.Errorf("a target given the extents and zeroed gaps differs from the source")
	}
}

// TestPunchGaps: --sparse on an ext4 image made over random bytes (so
// every block is allocated and free space is not zero): afterwards the
// file's allocated bytes are about what the filesystem uses, e2fsck
// finds it clean, every file reads back, and every piece of the torrent
// made before still verifies against it. On a zero-detected part the
// file's bytes do not change at all.
func TestPunchGaps(t *testing.T) {
	const size = 160 * miB // about 15% used
	img := fstest.RandomFile(t, "ext4.img", size, 11)
	v := fstest.MakeExt(t, img, fstest.NewFiles(t, 32, 1000<<10), "-t", "ext4")
	used := v.Used(t, img)
	im, err := Create(context.Background(), testlog.New(t), CreateConfig{Name: "ext4", Sources: []string{img}})
	if err != nil {
		t.Fatal(err)
	}
	f := im.Files[0]
	if f.Part.Gaps != GapsFree || f.Part.Filesystem != "ext4" {
		t.Fatalf("part: gaps %q, filesystem %q; want a used-block ext4 part", f.Part.Gaps, f.Part.Filesystem)
	}
	p, err := PunchGaps(img, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s; ext4 uses %d (%.1f%%), the torrent holds %d in %d extents", p, used, 100*float64(used)/size, f.Length, len(f.Part.Extents))
	// The free space was allocated (random bytes) and is freed, all but
	// blocks it shares with extents; what stays is at most the extents,
	// plus those shared blocks and the file's own extent tree (mke2fs may
	// itself have punched zeroed ranges of the journal and inode tables).
	if free := size - f.Length; p.Before-p.After < free-free/10 {
		t.Errorf("punching freed %d bytes (%d allocated before, %d after), want about the %d of free space", p.Before-p.After, p.Before, p.After, free)
	}
	if slack := int64(2*4096*len(f.Part.Extents)) + miB; p.After > f.Length+slack || p.After < f.Length/2 {
		t.Errorf("after punching: %d bytes allocated, want about the %d the extents hold (at most %d more)", p.After, f.Length, slack)
	}
	if got, err := allocatedOf(img); err != nil || got != p.After {
		t.Errorf("st_blocks after: %d bytes (%v), PunchGaps said %d", got, err, p.After)
	}
	v.Check(t, img)
	verifyAll(t, im, []string{img})

	// A zero-detected part: punching changes no byte.
	zsrc := filepath.Join(t.TempDir(), "zeroed.img")
	islandFile(t, zsrc, 40*miB, islands40, false, 1)
	sum := fileSum(t, zsrc)
	zim, err := Create(context.Background(), testlog.New(t), CreateConfig{Name: "zeros", Sources: []string{zsrc}})
	if err != nil {
		t.Fatal(err)
	}
	zp, err := PunchGaps(zsrc, zim.Files[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("zero-detected: %s", zp)
	if got := fileSum(t, zsrc); got != sum {
		t.Errorf("punching the zero runs changed the file's bytes")
	}
	if zp.After > zim.Length+int64(2*4096*len(zim.Files[0].Part.Extents))+miB {
		t.Errorf("after punching the zero runs: %d bytes allocated, want about the %d non-zero", zp.After, zim.Length)
	}
	verifyAll(t, zim, []string{zsrc})
}

// TestCheckSparse: a block device (a loop device) and a folder are
// refused with what to do; a file is fine.
func TestCheckSparse(t *testing.T) {
	file := filepath.Join(t.TempDir(), "x.img")
	writeRandom(t, file, miB, 1)
	if err := CheckSparse(file); err != nil {
		t.Errorf("CheckSparse(file) = %v, want nil", err)
	}
	if err := CheckSparse(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("CheckSparse(folder) = %v, want not a regular file", err)
	}
	loop := loopdev.Attach(t, file, false)
	err := CheckSparse(loop)
	if err == nil || !strings.Contains(err.Error(), "block device") || !strings.Contains(err.Error(), "leave out --sparse") {
		t.Errorf("CheckSparse(%s) = %v, want a block device refused with what to do", loop, err)
	}
	if _, err := PunchGaps(loop, File{Part: PartInfo{Size: miB, Extents: Extents{{0, 4096}}}}); err == nil {
		t.Errorf("PunchGaps(%s) = nil, want it refused", loop)
	}
}

func allocatedOf(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return allocated(f)
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha1.Sum(b))
}
