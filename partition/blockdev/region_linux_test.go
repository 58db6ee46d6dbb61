package blockdev

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/loopdev"
)

// randomFile makes a file of size random bytes and returns its path and
// its bytes.
func randomFile(t *testing.T, size int, seed uint64) (string, []byte) {
	t.Helper()
	b := make([]byte, size)
	io.ReadFull(rand.NewChaCha8([32]byte{byte(seed), 1}), b)
	p := filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

// loop attaches backing as a loop device (with partition scanning, so
// BLKPG may add partitions), opened for writing, and detaches it when the
// test ends.
func loop(t *testing.T, backing string) *os.File {
	t.Helper()
	dev := loopdev.Attach(t, backing, true)
	f, err := OpenExclusive(dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Ranges of a region at an offset that is sector- but not page-aligned:
// unaligned at both ends, shorter than a sector, sector-aligned, and the
// region's last bytes.
const regionOff, regionSize = 1<<20 + 1536, 4 << 20

var testRanges = []Range{{100, 70000}, {200000, 300}, {1 << 20, 2 << 20}, {regionSize - 5000, 5000}}

// inRanges says whether byte i of the file lies in one of rs of the
// region, and in its sector-aligned middle.
func inRanges(i int64, rs []Range) (in, middle bool) {
	for _, r := range rs {
		lo, hi := regionOff+r.Off, regionOff+r.Off+r.Len
		if i >= lo && i < hi {
			alo, ahi := inward(lo, hi, 512)
			return true, i >= alo && i < ahi
		}
	}
	return false, false
}

// compare checks got (the backing file after the call) against old: zero
// where zero says, old's bytes elsewhere.
func compare(t *testing.T, what string, got, old []byte, zero func(in, middle bool) bool) {
	t.Helper()
	for i := range got {
		in, middle := inRanges(int64(i), testRanges)
		want := old[i]
		if zero(in, middle) {
			want = 0
		}
		if got[i] != want {
			t.Fatalf("%s: byte %d of the file (region byte %d, in a range %v, in its aligned middle %v) is %#x, want %#x",
				what, i, int64(i)-regionOff, in, middle, got[i], want)
		}
	}
}

func total(rs []Range) (n int64) {
	for _, r := range rs {
		n += r.Len
	}
	return n
}

// TestRegionZero: on a loop device (BLKZEROOUT for the aligned middles,
// written zeros at the ends) and on a regular file (punched holes),
// Zero makes exactly the ranges read zero, every other byte keeps its
// old value, and progress ends at the ranges' total.
func TestRegionZero(t *testing.T) {
	for _, block := range []bool{true, false} {
		backing, old := randomFile(t, 8<<20, 1)
		var f *os.File
		if block {
			f = loop(t, backing)
		} else {
			var err error
			if f, err = os.OpenFile(backing, os.O_RDWR, 0); err != nil {
				t.Fatal(err)
			}
			defer f.Close()
		}
		var done int64
		r := Region{File: f, Off: regionOff, Size: regionSize, Block: block}
		if err := r.Zero(context.Background(), testRanges, func(d int64) { done = d }); err != nil {
			t.Fatalf("block %v: Zero = %v", block, err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if done != total(testRanges) {
			t.Errorf("block %v: progress ended at %d, want %d", block, done, total(testRanges))
		}
		got, err := os.ReadFile(backing)
		if err != nil {
			t.Fatal(err)
		}
		compare(t, map[bool]string{true: "loop device", false: "file"}[block], got, old, func(in, _ bool) bool { return in })
	}
}

// TestRegionDiscard: on a loop device, Discard rounds each range inward to
// whole sectors: the loop driver punches those out of its backing file
// (they read zero), and the bytes outside them, the unaligned ends of the
// ranges included, keep their old values. On a regular file it punches
// the ranges exactly.
func TestRegionDiscard(t *testing.T) {
	backing, old := randomFile(t, 8<<20, 2)
	f := loop(t, backing)
	r := Region{File: f, Off: regionOff, Size: regionSize, Block: true}
	if err := r.Discard(context.Background(), testRanges, nil); err != nil {
		t.Fatalf("Discard on a loop device = %v", err)
	}
	f.Sync()
	got, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	compare(t, "loop device", got, old, func(_, middle bool) bool { return middle })

	backing, old = randomFile(t, 8<<20, 3)
	ff, err := os.OpenFile(backing, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	r = Region{File: ff, Off: regionOff, Size: regionSize}
	if err := r.Discard(context.Background(), testRanges, nil); err != nil {
		t.Fatalf("Discard on a file = %v", err)
	}
	if got, err = os.ReadFile(backing); err != nil {
		t.Fatal(err)
	}
	compare(t, "file", got, old, func(in, _ bool) bool { return in })
}

// TestRegionRefusesOutside: a range past the region's end is refused
// before anything is touched.
func TestRegionRefusesOutside(t *testing.T) {
	backing, old := randomFile(t, 1<<20, 4)
	f, err := os.OpenFile(backing, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := Region{File: f, Off: 4096, Size: 8192}
	for _, rs := range [][]Range{{{0, 8193}}, {{0, 10}, {8000, 200}}, {{-1, 5}}} {
		if err := r.Zero(context.Background(), rs, nil); err == nil {
			t.Errorf("Zero(%v) on an 8192-byte region = nil, want an error", rs)
		}
		if err := r.Discard(context.Background(), rs, nil); err == nil || errors.Is(err, ErrCannotDiscard) {
			t.Errorf("Discard(%v) on an 8192-byte region = %v, want a range error", rs, err)
		}
	}
	got, _ := os.ReadFile(backing)
	if !bytes.Equal(got, old) {
		t.Errorf("a refused call changed the file")
	}
}

// TestDiscardMaxPartition: a partition of a loop device (added by BLKPG)
// reads its disk's queue, which a loop device over a file that can punch
// holes sets above 0.
func TestDiscardMaxPartition(t *testing.T) {
	backing, _ := randomFile(t, 8<<20, 5)
	f := loop(t, backing)
	disk, err := discardMax(f)
	if err != nil || disk <= 0 {
		t.Fatalf("discardMax(%s) = %d, %v; want above 0 for a loop device", f.Name(), disk, err)
	}
	if err := AddPartition(f, 1, 1<<20, 2<<20); err != nil {
		t.Fatalf("BLKPG add partition 1 to %s: %v", f.Name(), err)
	}
	defer DeletePartition(f, 1)
	node := f.Name() + "p1"
	var p *os.File
	for range 100 {
		if p, err = os.Open(node); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("partition node %s: %v", node, err)
	}
	defer p.Close()
	got, err := discardMax(p)
	if err != nil || got != disk {
		t.Errorf("discardMax(%s) = %d, %v; want its disk's %d", node, got, err, disk)
	}
}
