package imager

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/loopdev"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// handTorrent encodes a one-part image of the partition bytes src by
// hand, as a zero-detecting mktorrent would: the torrent's file is src's
// extents es packed, and the layout says es and gaps.
func handTorrent(t *testing.T, src []byte, es Extents, gaps string, pieceLen int64) []byte {
	t.Helper()
	var packed []byte
	for _, e := range es {
		packed = append(packed, src[e.Off:e.End()]...)
	}
	var pieces []byte
	for off := 0; off < len(packed); off += int(pieceLen) {
		sum := sha1.Sum(packed[off:min(len(packed), off+int(pieceLen))])
		pieces = append(pieces, sum[:]...)
	}
	info := infoDict{
		Files: []fileEntry{{Length: int64(len(packed)), Path: []string{"part1.img"}}},
		Name:  "zeros", PieceLength: pieceLen, Pieces: pieces,
		Layout: &Layout{Parts: []PartInfo{{Number: 1, Size: int64(len(src)), Extents: es, Gaps: gaps}}},
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	data, err := bencode.Marshal(metainfo.MetaInfo{InfoBytes: ib, Announce: "http://127.0.0.1:1/announce"})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// zeroRuns are where zeroSource is zero: at both ends, shorter than a
// sector, unaligned, sector-aligned, and large.
func zeroRuns(size int64) []Extent {
	return []Extent{{0, 3000}, {100000, 777}, {1<<20 + 512, 2 << 20}, {4<<20 + 1, 70000}, {size - 5000, 5000}}
}

// zeroSource is random bytes with the zeroRuns, written to a file, and
// the extents over everything else: a GapsZero image's layout.
func zeroSource(t *testing.T, dir string) (string, []byte, Extents) {
	t.Helper()
	const size = 6<<20 + 1000
	b := make([]byte, size)
	io.ReadFull(rand.NewChaCha8([32]byte{9}), b)
	var es Extents
	var at int64
	for _, z := range zeroRuns(size) {
		clear(b[z.Off:z.End()])
		if z.Off > at {
			es = append(es, Extent{at, z.Off - at})
		}
		at = z.End()
	}
	p := filepath.Join(dir, "zeros.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b, es
}

// TestParseGapKinds: a layout's gaps may be "free" or "zero"; any other
// kind is refused with a message that names it and says what to do.
func TestParseGapKinds(t *testing.T) {
	_, src, es := zeroSource(t, t.TempDir())
	for _, kind := range []string{GapsFree, GapsZero} {
		im, err := Parse(handTorrent(t, src, es, kind, 64<<10))
		if err != nil {
			t.Errorf("Parse(gaps %q) = %v, want nil", kind, err)
			continue
		}
		if got := im.Files[0].Part.Gaps; got != kind {
			t.Errorf("Parse(gaps %q): part's gaps %q", kind, got)
		}
	}
	for _, kind := range []string{"sparkly", "ZERO", ""} {
		_, err := Parse(handTorrent(t, src, es, kind, 64<<10))
		if !errors.Is(err, ErrBadTorrent) || !strings.Contains(err.Error(), `gaps "`+kind+`", want "free" or "zero"`) || !strings.Contains(err.Error(), "update") {
			t.Errorf("Parse(gaps %q) = %v, want ErrBadTorrent naming the kind and what to do", kind, err)
		}
	}
}

// loopFile attaches backing as a loop device until the test ends.
func loopFile(t *testing.T, backing string) string {
	return loopdev.Attach(t, backing, false)
}

// TestFetchZeroGaps: a GapsZero image, fetched through a session that
// opens its targets (Config.Paths, as `pxeswarm fetch` does) onto a
// regular file and a loop device that hold random bytes, leaves each
// target equal to the source byte for byte: the extents written, the
// gaps zeroed. Then a verify run zeroes them again after they were
// scribbled on, fetching nothing.
func TestFetchZeroGaps(t *testing.T) {
	dir := t.TempDir()
	srcPath, src, es := zeroSource(t, dir)
	im, err := Parse(handTorrent(t, src, es, GapsZero, 64<<10))
	if err != nil {
		t.Fatal(err)
	}
	seed := startSeed(t, im, []string{srcPath})
	for _, block := range []bool{false, true} {
		name := map[bool]string{false: "file", true: "loop device"}[block]
		backing := filepath.Join(t.TempDir(), "target.img")
		writeRandom(t, backing, 8<<20, 77) // larger than the partition (the rest is not its), whole sectors
		after := func() []byte {
			b, err := os.ReadFile(backing)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		old := after()
		target := backing
		if block {
			target = loopFile(t, backing)
		}
		check := func(when string) {
			got := after()
			if !bytes.Equal(got[:len(src)], src) {
				i := 0
				for got[i] == src[i] {
					i++
				}
				t.Errorf("%s, %s: the target differs from the source from byte %d on (%#x, want %#x)", name, when, i, got[i], src[i])
			}
			if !bytes.Equal(got[len(src):], old[len(src):]) {
				t.Errorf("%s, %s: bytes past the partition were written", name, when)
			}
		}
		p := fetch(t, im, []string{target}, ModeFresh, seed.ListenAddr())
		if p.State != StateDone {
			t.Errorf("%s: final state %s, want %s", name, p.State, StateDone)
		}
		check("fresh")

		// Scribble in a gap, then verify: the pieces are all there, the
		// gap is zeroed again.
		f, err := os.OpenFile(target, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("scribble"), 1<<20+4096); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if p := fetch(t, im, []string{target}, ModeVerify, seed.ListenAddr()); p.Downloaded != 0 {
			t.Errorf("%s: verify downloaded %d bytes, want 0", name, p.Downloaded)
		}
		check("after verify")
	}
}

// TestFinishGapsNeedsRegion: a GapsZero part written to something whose
// gaps cannot be reached is an error, never a silent success; a GapsFree
// part there is left as it is, discard or not.
func TestFinishGapsNeedsRegion(t *testing.T) {
	_, src, es := zeroSource(t, t.TempDir())
	for _, tc := range []struct {
		kind    string
		discard bool
		ok      bool
	}{{GapsZero, false, false}, {GapsZero, true, false}, {GapsFree, true, true}, {GapsFree, false, true}} {
		im, err := Parse(handTorrent(t, src, es, tc.kind, 64<<10))
		if err != nil {
			t.Fatal(err)
		}
		parts := []Part{{RW: OnExtents(make(memRW, len(src)), es), Length: im.Files[0].Length}}
		err = FinishGaps(context.Background(), testlog.New(t), im, parts, tc.discard, nil)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrZeroGaps)) {
			t.Errorf("FinishGaps(gaps %s, discard %v) on memory = %v, want ok=%v (else ErrZeroGaps)", tc.kind, tc.discard, err, tc.ok)
		}
	}
}
