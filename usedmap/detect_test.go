package usedmap

import (
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// TestDetectOthers: a swap area maps to its header page; random bytes,
// zeros, and an image that matches two signatures map whole as Unknown
// (never guessed at); an ext3 whose journal needs recovery and an ext4
// that claims more blocks than the partition holds are errors.
func TestDetectOthers(t *testing.T) {
	needs.Tool(t, "mkswap", "mke2fs", "mkfs.vfat", "dumpe2fs")
	const size = 8 << 20
	patch := func(t *testing.T, img string, off int64, b []byte) {
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("swap", func(t *testing.T) {
		img := fstest.RandomFile(t, "swap.img", size, 0)
		fstest.Run(t, "mkswap", img)
		m := detectFile(t, img)
		want := Map{Kind: Swap, BlockSize: int64(os.Getpagesize()), Size: size, Extents: []Extent{{0, int64(os.Getpagesize())}}}
		if d := cmp.Diff(want, m); d != "" {
			t.Errorf("Detect(mkswap) differs (-want +got):\n%s", d)
		}
	})
	whole := Map{Kind: Unknown, BlockSize: 512, Size: size, Extents: []Extent{{0, size}}}
	t.Run("random", func(t *testing.T) {
		if d := cmp.Diff(whole, detectFile(t, fstest.RandomFile(t, "random.img", size, 0))); d != "" {
			t.Errorf("Detect(random bytes) differs (-want +got):\n%s", d)
		}
	})
	t.Run("zeros", func(t *testing.T) {
		img := fstest.RandomFile(t, "zeros.img", 0, 0)
		if err := os.Truncate(img, size); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(whole, detectFile(t, img)); d != "" {
			t.Errorf("Detect(zeros) differs (-want +got):\n%s", d)
		}
	})
	t.Run("fat-and-ext", func(t *testing.T) {
		ext := fstest.RandomFile(t, "ext.img", size, 0)
		fstest.Run(t, "mke2fs", "-q", "-F", "-t", "ext2", ext)
		sb, err := os.ReadFile(ext)
		if err != nil {
			t.Fatal(err)
		}
		img := fstest.RandomFile(t, "fat.img", size, 0)
		fstest.Run(t, "mkfs.vfat", "-F", "12", img)
		if m := detectFile(t, img); m.Kind != FAT12 {
			t.Fatalf("before the ext superblock: Kind = %s, want %s", m.Kind, FAT12)
		}
		patch(t, img, 1024, sb[1024:2048])
		if d := cmp.Diff(whole, detectFile(t, img)); d != "" {
			t.Errorf("Detect(FAT with an ext superblock) differs (-want +got):\n%s", d)
		}
	})
	t.Run("ext3-needs-recovery", func(t *testing.T) {
		img := fstest.RandomFile(t, "ext3.img", size, 0)
		fstest.Run(t, "mke2fs", "-q", "-F", "-t", "ext3", img)
		detectFile(t, img)
		sb := make([]byte, 4)
		f, _ := os.Open(img)
		f.ReadAt(sb, 1024+0x60)
		f.Close()
		sb[0] |= extIncompatRecover
		patch(t, img, 1024+0x60, sb)
		if out := fstest.Run(t, "dumpe2fs", "-h", img); !strings.Contains(out, "needs_recovery") {
			t.Fatalf("dumpe2fs does not see needs_recovery:\n%s", out)
		}
		_, err := Detect(fstest.Open(t, img), size)
		if !errors.Is(err, ErrDirty) || !strings.Contains(err.Error(), "e2fsck") {
			t.Errorf("Detect(ext3 needing recovery) = %v, want ErrDirty saying what to do", err)
		}
	})
	t.Run("ext4-truncated", func(t *testing.T) {
		img := fstest.RandomFile(t, "ext4.img", size, 0)
		fstest.Run(t, "mke2fs", "-q", "-F", "-t", "ext4", img)
		if err := os.Truncate(img, size/2); err != nil {
			t.Fatal(err)
		}
		_, err := Detect(fstest.Open(t, img), size/2)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "truncated") {
			t.Errorf("Detect(truncated ext4) = %v, want ErrCorrupt saying the image is truncated", err)
		}
	})
}

func TestMerge(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []Extent
		max  int
		want []Extent
	}{
		{"empty", nil, 0, nil},
		{"overlap and touch", []Extent{{10, 5}, {0, 10}, {12, 10}, {30, 0}, {40, 1}}, 0, []Extent{{0, 22}, {40, 1}}},
		{"under the cap", []Extent{{0, 1}, {5, 1}}, 2, []Extent{{0, 1}, {5, 1}}},
		{"smallest gap first", []Extent{{0, 1}, {10, 1}, {12, 1}, {100, 1}}, 3, []Extent{{0, 1}, {10, 3}, {100, 1}}},
		{"equal gaps left first", []Extent{{0, 1}, {3, 1}, {6, 1}, {9, 1}}, 2, []Extent{{0, 7}, {9, 1}}},
		{"down to one", []Extent{{5, 1}, {50, 1}, {500, 1}}, 1, []Extent{{5, 496}}},
	} {
		got := Merge(tc.in, tc.max)
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s: Merge = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestMergeRandom checks Merge against a byte-by-byte model: the result
// covers every input byte, has at most max extents, and adds exactly the
// smallest gaps.
func TestMergeRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		const span = 400
		var in []Extent
		cover := make([]bool, span)
		for range rng.IntN(30) {
			e := Extent{int64(rng.IntN(span - 20)), int64(rng.IntN(20))}
			in = append(in, e)
			for i := e.Off; i < e.End(); i++ {
				cover[i] = true
			}
		}
		full := Merge(append([]Extent(nil), in...), 0)
		max := 1 + rng.IntN(8)
		got := Merge(append([]Extent(nil), in...), max)
		checkShape(t, Map{Kind: "merge", Size: span, Extents: got})
		if len(got) > max {
			t.Fatalf("Merge(%v, %d) = %d extents", in, max, len(got))
		}
		m := Map{Extents: got}
		for i, c := range cover {
			if c && !m.Contains(int64(i), 1) {
				t.Fatalf("Merge(%v, %d) = %v lost byte %d", in, max, got, i)
			}
		}
		var gaps []int64
		for i := 1; i < len(full); i++ {
			gaps = append(gaps, full[i].Off-full[i-1].End())
		}
		var added int64
		if n := len(full) - max; n > 0 {
			sortInts(gaps)
			for _, g := range gaps[:n] {
				added += g
			}
		}
		if d := m.Used() - (Map{Extents: full}).Used(); d != added {
			t.Fatalf("Merge(%v, %d) = %v added %d bytes, want the %d of the smallest gaps", in, max, got, d, added)
		}
	}
}

func sortInts(a []int64) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

func TestString(t *testing.T) {
	m := Map{Kind: Ext4, Size: 256 << 30, Extents: make([]Extent, 1204)}
	for i := range m.Extents {
		m.Extents[i] = Extent{int64(i) << 25, 32 << 20}
	}
	if got, want := m.String(), "ext4: 37.6GiB used of 256GiB, 1,204 extents"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
