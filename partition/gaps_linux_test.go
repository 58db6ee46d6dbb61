package partition_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	. "github.com/pxeswarm/pxeswarm/partition"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/partition/blockdev"
)

// TestLoopUsedBlockDiscard: a used-block image of an ext4 (mke2fs -d,
// about a sixth used) goes through OpenParts and imager.FinishGaps (the
// agent's write steps) onto a loop device that holds random bytes, at
// its partition's node (BLKPG) and at an offset on the disk. Either way
// the extents are the source's byte for byte, the filesystem checks
// clean and every file reads back (e2fsck -fn, debugfs cat), and nothing
// outside the partition changes. With discard the free space reads zero
// (the loop device punches it out of its file); without, it keeps the
// disk's old bytes: it is the option that discards.
func TestLoopUsedBlockDiscard(t *testing.T) {
	const partSize, diskSize, start = 80 * MiB, 88 * MiB, MiB
	src := fstest.RandomFile(t, "root.img", partSize, 1)
	vol := fstest.MakeExt(t, src, fstest.NewFiles(t, 24, 400<<10), "-t", "ext4")
	im, err := imager.Create(context.Background(), testlog.New(t), imager.CreateConfig{
		Name: "root", Sources: []string{src}, PieceLength: imager.MinPieceLength,
		Parts: []imager.PartInfo{{Number: 1, Size: partSize}},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := im.Files[0]
	if f.Part.Gaps != imager.GapsFree || len(f.Part.Extents) < 2 || f.Length > partSize/5 {
		t.Fatalf("image: gaps %q, %d extents, %d of %d bytes: want a used-block part, at most a fifth used", f.Part.Gaps, len(f.Part.Extents), f.Length, partSize)
	}
	t.Logf("ext4: %d of %d bytes used (%.1f%%) in %d extents", f.Length, partSize, 100*float64(f.Length)/float64(partSize), len(f.Part.Extents))
	source, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	gaps := f.Part.Extents.Gaps(partSize)

	for _, tc := range []struct {
		name    string
		node    bool
		discard bool
	}{{"node", true, true}, {"offset", false, true}, {"node", true, false}, {"offset", false, false}} {
		dev, backing := loopDevice(t, diskSize, false)
		fstest.Fill(t, backing, 0, diskSize, 42)
		old, err := os.ReadFile(backing)
		if err != nil {
			t.Fatal(err)
		}
		place := Place{Number: 1, Path: dev, Offset: start, Size: partSize, Length: f.Length, Extents: f.Part.Extents}
		if tc.node {
			place.Path, place.Offset = addPartition(t, dev, start, partSize), 0
		}
		parts, closeAll, err := OpenParts([]Place{place})
		if err != nil {
			t.Fatal(err)
		}
		devs, err := im.OpenSources([]string{src})
		if err != nil {
			t.Fatal(err)
		}
		if err := (imager.CopyConfig{Image: im, From: im.SourceParts(devs), To: parts}).Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		devs[0].Close()
		var done, all int64
		if err := imager.FinishGaps(context.Background(), testlog.New(t), im, parts, tc.discard, func(d, n int64) { done, all = d, n }); err != nil {
			t.Fatalf("%s discard %v: FinishGaps = %v", tc.name, tc.discard, err)
		}
		if err := closeAll(); err != nil {
			t.Fatal(err)
		}
		if tc.discard && (all != partSize-f.Length || done != all) {
			t.Errorf("%s: progress %d of %d, want %d of %d (the gaps)", tc.name, done, all, partSize-f.Length, partSize-f.Length)
		}

		disk, err := os.ReadFile(backing)
		if err != nil {
			t.Fatal(err)
		}
		part := disk[start : start+partSize]
		for _, e := range f.Part.Extents {
			if !bytes.Equal(part[e.Off:e.End()], source[e.Off:e.End()]) {
				t.Fatalf("%s discard %v: extent at %d (+%d) differs from the source", tc.name, tc.discard, e.Off, e.Len)
			}
		}
		zero := make([]byte, partSize)
		for _, g := range gaps {
			want, what := old[start+g.Off:start+g.End()], "the disk's old bytes"
			if tc.discard {
				want, what = zero[:g.Len], "zeros"
			}
			if !bytes.Equal(part[g.Off:g.End()], want) {
				t.Fatalf("%s discard %v: free space at %d (+%d) is not %s", tc.name, tc.discard, g.Off, g.Len, what)
			}
		}
		if !bytes.Equal(disk[:start], old[:start]) || !bytes.Equal(disk[start+partSize:], old[start+partSize:]) {
			t.Errorf("%s discard %v: bytes outside the partition changed", tc.name, tc.discard)
		}
		vol.Check(t, fstest.Extract(t, backing, start, partSize))
	}
}

// addPartition adds partition 1 of size bytes at start to dev's kernel
// view (BLKPG) and returns its node once devtmpfs made it. loopDevice's
// cleanup removes it.
func addPartition(t *testing.T, dev string, start, size int64) string {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := blockdev.AddPartition(f, 1, start, size); err != nil {
		t.Fatalf("BLKPG add partition 1 to %s: %v", dev, err)
	}
	node := dev + "p1"
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(node); err == nil {
			return node
		}
	}
	t.Fatalf("no node %s after BLKPG", node)
	return ""
}

// zeroGapImage is a partition of size random bytes with runs of zeros
// (at both ends, shorter than a sector, unaligned, large) and an image of
// it made by hand as zero detection would: extents over the rest, gaps
// "zero".
func zeroGapImage(t *testing.T, size int64) (*imager.Image, []byte) {
	t.Helper()
	src := make([]byte, size)
	io.ReadFull(rand.NewChaCha8([32]byte{3}), src)
	var es imager.Extents
	var at int64
	for _, z := range []imager.Extent{{Off: 0, Len: 3000}, {Off: 100000, Len: 777}, {Off: MiB + 512, Len: 2 * MiB}, {Off: 4*MiB + 1, Len: 70000}, {Off: size - 5000, Len: 5000}} {
		clear(src[z.Off:z.End()])
		if z.Off > at {
			es = append(es, imager.Extent{Off: at, Len: z.Off - at})
		}
		at = z.End()
	}
	var packed []byte
	for _, e := range es {
		packed = append(packed, src[e.Off:e.End()]...)
	}
	const pieceLen = 64 << 10
	var pieces []byte
	for off := 0; off < len(packed); off += pieceLen {
		sum := sha1.Sum(packed[off:min(len(packed), off+pieceLen)])
		pieces = append(pieces, sum[:]...)
	}
	ib, err := bencode.Marshal(map[string]any{
		"name": "zeros", "piece length": pieceLen, "pieces": pieces,
		"files":    []map[string]any{{"length": len(packed), "path": []string{"part1.img"}}},
		"pxeswarm": imager.Layout{Parts: []imager.PartInfo{{Number: 1, Size: size, Extents: es, Gaps: imager.GapsZero}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := bencode.Marshal(metainfo.MetaInfo{InfoBytes: ib})
	if err != nil {
		t.Fatal(err)
	}
	im, err := imager.Parse(data)
	if err != nil {
		t.Fatalf("Parse(an image with zero gaps) = %v", err)
	}
	return im, src
}

// TestLoopZeroGaps: an image with zero gaps, written the agent's way
// (OpenParts, the checked copy, imager.FinishGaps) onto a loop device
// full of random bytes, at a partition node and at an offset on the disk,
// leaves the partition equal to the source byte for byte and nothing
// else changed; the read-back's sample (imager.CheckZeroGaps) passes, and
// fails once a gap is scribbled on.
func TestLoopZeroGaps(t *testing.T) {
	const partSize, diskSize, start = 6*MiB + 1024, 10 * MiB, MiB
	im, src := zeroGapImage(t, partSize)
	f := im.Files[0]
	for _, node := range []bool{true, false} {
		dev, backing := loopDevice(t, diskSize, false)
		fstest.Fill(t, backing, 0, diskSize, 7)
		old, err := os.ReadFile(backing)
		if err != nil {
			t.Fatal(err)
		}
		place := Place{Number: 1, Path: dev, Offset: start, Size: partSize, Length: f.Length, Extents: f.Part.Extents}
		if node {
			place.Path, place.Offset = addPartition(t, dev, start, partSize), 0
		}
		parts, closeAll, err := OpenParts([]Place{place})
		if err != nil {
			t.Fatal(err)
		}
		from := []imager.Part{{RW: imager.OnExtents(memPart(src), f.Part.Extents), Length: f.Length}}
		if err := (imager.CopyConfig{Image: im, From: from, To: parts}).Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := imager.FinishGaps(context.Background(), testlog.New(t), im, parts, false, nil); err != nil {
			t.Fatalf("node %v: FinishGaps = %v", node, err)
		}
		if err := parts[0].RW.(interface{ Sync() error }).Sync(); err != nil {
			t.Fatal(err)
		}
		if err := imager.CheckZeroGaps(context.Background(), im, parts); err != nil {
			t.Errorf("node %v: CheckZeroGaps after FinishGaps = %v", node, err)
		}
		disk, err := os.ReadFile(backing)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(disk[start:start+partSize], src) {
			t.Errorf("node %v: the partition differs from the source", node)
		}
		if !bytes.Equal(disk[:start], old[:start]) || !bytes.Equal(disk[start+partSize:], old[start+partSize:]) {
			t.Errorf("node %v: bytes outside the partition changed", node)
		}

		// A gap that does not read zero is caught by the sample (the
		// first gap's first bytes).
		w, err := os.OpenFile(backing, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		w.WriteAt([]byte("not zero"), start+10)
		w.Close()
		if err := imager.CheckZeroGaps(context.Background(), im, parts); !errors.Is(err, imager.ErrZeroGaps) {
			t.Errorf("node %v: CheckZeroGaps with bytes in a gap = %v, want ErrZeroGaps", node, err)
		}
		if err := closeAll(); err != nil {
			t.Fatal(err)
		}
	}
}

// memPart is an image source in memory.
type memPart []byte

func (m memPart) ReadAt(b []byte, off int64) (int, error) { return copy(b, m[off:]), nil }
func (m memPart) WriteAt([]byte, int64) (int, error)      { return 0, errors.ErrUnsupported }
