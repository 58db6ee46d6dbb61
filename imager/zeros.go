package imager

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/pxeswarm/pxeswarm/usedmap"
)

// Zero detection. A source whose filesystem usedmap does not read (or
// that holds none) is never guessed at; what Create does instead is look
// at its bytes while hashing: runs of all-zero blocks of at least
// MinZeroRun are left out of the torrent file, and the part's layout lists
// the non-zero extents with Gaps = GapsZero, so targets zero the runs.
// A partition that was zero-filled before its capture thus ships what was
// written since. Holes of a sparse source file (SEEK_HOLE) count as zeros
// without being read.
//
// It is one pass: the extents decide where pieces fall, and they are
// known only once the source has been read, so the reader writes the
// source's bytes as they come into the torrent stream, leaving out a zero
// run once it has reached MinZeroRun and ended. Until the runs left out
// reach 1/zeroShare of the source, the same bytes are also hashed as the
// plain (whole) file, so that a source with few zeros ships plain without
// being read again. Only a source that would exceed MaxExtents is read a
// second time (just its extents, after merging across the smallest runs).

const (
	// ZeroBlock is the unit zero detection looks at: a 4 KiB block that
	// is zero in every byte is a zero block; runs of them are cut at
	// block boundaries, so every gap starts 4 KiB-aligned and ends so or
	// at the partition's end. 4 KiB is the page size and the sector of
	// 4Kn disks: a target zeroes a gap with BLKZEROOUT, which wants
	// sector-aligned ranges, or punches it out of a file whole blocks at
	// a time, and the image host's --sparse frees whole blocks.
	ZeroBlock = 4 << 10
	// MinZeroRun is the shortest zero run left out. A shorter one saves
	// less than a millisecond on a gigabit link, but costs every target a
	// zeroing call and splits writes; and 16 bytes of layout each. Large
	// runs (the free space of a zero-filled partition) are what matters.
	MinZeroRun = 1 << 20
	// zeroShare: zero runs are left out only when together they hold at
	// least 1/zeroShare of the source (3%); below that the source ships
	// plain, byte for byte (as --raw), so stock clients and web seeds that
	// serve the file as it is can seed it, and targets need not zero.
	zeroShare = 32
	// zeroChunk is the read size of the scan: a multiple of ZeroBlock.
	zeroChunk = 1 << 20
)

// zeroScan is the result of scanning one source.
type zeroScan struct {
	out     *assembler // the stream goes on here
	extents Extents    // nil: the source ships plain
	length  int64      // bytes of the source in the torrent
	zero    int64      // bytes of the zero runs found (left out or not)
	holes   int64      // bytes skipped unread as holes
	capped  bool       // merged down to maxExtents and read again
}

// zeroScanner follows one source's bytes in order and writes them to up to
// two candidate streams: packed (zero runs left out) and plain.
type zeroScanner struct {
	ctx    context.Context
	size   int64
	packed *assembler
	plain  *assembler // nil while the two streams are the same, and once plain is out
	// split: a run has been left out, so plain and packed differ; out:
	// the runs left out reach 1/zeroShare, so plain is no longer wanted.
	split, out     bool
	gaps           []Extent
	gapBytes       int64
	runOff, runLen int64 // the zero run going on
}

// data writes non-zero bytes, which end any zero run.
func (z *zeroScanner) data(b []byte) error {
	if err := z.endRun(); err != nil {
		return err
	}
	if err := z.packed.write(z.ctx, b); err != nil {
		return err
	}
	if z.plain != nil {
		return z.plain.write(z.ctx, b)
	}
	return nil
}

// zeros notes n zero bytes at off (block-aligned).
func (z *zeroScanner) zeros(off, n int64) error {
	if z.runLen == 0 {
		z.runOff = off
	}
	z.runLen += n
	if !z.out && z.runLen >= MinZeroRun && (z.gapBytes+z.runLen)*zeroShare >= z.size {
		// This run will be left out, and with it the runs reach
		// 1/zeroShare: the plain stream is no longer wanted (and a
		// large hole is not hashed into it).
		z.dropPlain()
	}
	if z.plain != nil {
		return z.plain.zeros(z.ctx, n)
	}
	return nil
}

// dropPlain gives up the plain stream: the source will ship packed.
func (z *zeroScanner) dropPlain() {
	if z.plain != nil {
		z.plain.discard()
		z.plain = nil
	}
	z.split, z.out = true, true
}

// endRun settles the zero run that just ended: a short one goes into the
// packed stream, a long one becomes a gap.
func (z *zeroScanner) endRun() error {
	n := z.runLen
	if n == 0 {
		return nil
	}
	z.runLen = 0
	if n < MinZeroRun {
		return z.packed.zeros(z.ctx, n)
	}
	z.gaps = append(z.gaps, Extent{Off: z.runOff, Len: n})
	z.gapBytes += n
	switch {
	case z.out:
	case z.gapBytes*zeroShare >= z.size:
		z.dropPlain()
	case !z.split: // the streams part: plain gets the run packed leaves out
		z.split = true
		z.plain = z.packed.fork()
		return z.plain.zeros(z.ctx, n)
	}
	return nil
}

// scanZeros writes the size bytes of source f into the stream in (see the
// comment at the top) and returns where the stream goes on and the part's
// extents. done is called with the source bytes read or skipped.
func scanZeros(ctx context.Context, in *assembler, f *os.File, size int64, maxExtents int, done func(int64)) (zeroScan, error) {
	var base *assembler
	if size/MinZeroRun+1 > int64(maxExtents) {
		base = in.fork() // in case the extents must be merged and read again
	}
	start := in.n
	z := &zeroScanner{ctx: ctx, size: size, packed: in}
	var res zeroScan
	buf := make([]byte, zeroChunk)
	zero := make([]byte, ZeroBlock)
	isZero := func(b []byte) bool { return bytes.Equal(b, zero[:len(b)]) }
	for pos := int64(0); pos < size; {
		hs, he, err := nextHole(f, pos, size)
		if err != nil {
			return res, fmt.Errorf("find the holes of %s: %w", f.Name(), err)
		}
		for pos < hs {
			b := buf[:min(hs-pos, zeroChunk)]
			if n, err := f.ReadAt(b, pos); n < len(b) {
				return res, fmt.Errorf("read %s at %d: %w", f.Name(), pos+int64(n), err)
			}
			// Runs of blocks of one kind, zero or not.
			emit := func(from, to int, zero bool) error {
				if zero {
					return z.zeros(pos+int64(from), int64(to-from))
				}
				return z.data(b[from:to])
			}
			from, wasZero := 0, isZero(b[:min(ZeroBlock, len(b))])
			for i := ZeroBlock; i < len(b); i += ZeroBlock {
				isz := isZero(b[i:min(i+ZeroBlock, len(b))])
				if isz == wasZero {
					continue
				}
				if err := emit(from, i, wasZero); err != nil {
					return res, err
				}
				from, wasZero = i, isz
			}
			if err := emit(from, len(b), wasZero); err != nil {
				return res, err
			}
			pos += int64(len(b))
			done(int64(len(b)))
		}
		if he > hs {
			if err := z.zeros(hs, he-hs); err != nil {
				return res, err
			}
			res.holes += he - hs
			done(he - hs)
			pos = he
		}
	}
	if err := z.endRun(); err != nil {
		return res, err
	}
	for _, g := range z.gaps {
		res.zero += g.Len
	}
	switch {
	case !z.split: // no run left out: the packed stream is the plain one
		res.out, res.length = z.packed, size
		return res, nil
	case !z.out: // too few zeros to be worth it
		z.packed.discard()
		res.out, res.length = z.plain, size
		return res, nil
	}
	if z.gapBytes == size {
		// All zero: keep the first block, so the part has a byte to
		// ship. Nothing of the source went into packed yet.
		z.gaps[0] = Extent{Off: ZeroBlock, Len: size - ZeroBlock}
		if err := z.packed.zeros(ctx, ZeroBlock); err != nil {
			return res, err
		}
	}
	res.extents = Extents(z.gaps).Gaps(size)
	res.out, res.length = z.packed, z.packed.n-start
	if len(res.extents) <= maxExtents {
		if base != nil {
			base.discard()
		}
		return res, nil
	}
	// Too many extents: merge across the smallest runs and hash the
	// merged extents again from where the source began.
	if base == nil { // cannot be: each extent but the last ends at a run of MinZeroRun
		return res, fmt.Errorf("%s: %d extents from %d bytes", f.Name(), len(res.extents), size)
	}
	z.packed.discard()
	res.extents = capExtents(res.extents, maxExtents)
	res.capped, res.out, res.length = true, base, res.extents.Total()
	if err := base.readFrom(ctx, OnExtents(f, res.extents), 0, res.length, nil); err != nil {
		return res, fmt.Errorf("read %s again: %w", f.Name(), err)
	}
	return res, nil
}

// capExtents joins es across their smallest gaps until at most max remain
// (usedmap.Merge).
func capExtents(es Extents, max int) Extents {
	m := make([]usedmap.Extent, len(es))
	for i, e := range es {
		m[i] = usedmap.Extent(e)
	}
	m = usedmap.Merge(m, max)
	out := make(Extents, len(m))
	for i, e := range m {
		out[i] = Extent(e)
	}
	return out
}

// nextHole returns the first hole of f at or after pos (pos block-aligned)
// that holds at least one whole block, as [hs, he) shrunk to block
// boundaries (he may be size), or size, size when there is none. The
// partial blocks a hole leaves at its edges are read as data, and read as
// zeros.
func nextHole(f *os.File, pos, size int64) (hs, he int64, err error) {
	for at := pos; at < size; {
		h, err := seekHole(f, at, size)
		if err != nil || h >= size {
			return size, size, err
		}
		d, err := seekData(f, h, size)
		if err != nil {
			return size, size, err
		}
		hs, he = (h+ZeroBlock-1)/ZeroBlock*ZeroBlock, d
		if d < size {
			he = d / ZeroBlock * ZeroBlock
		}
		if he > hs {
			return hs, he, nil
		}
		at = max(d, at+1)
	}
	return size, size, nil
}

// dataBytes is the bytes of f not in holes of at least a block: what a
// zero scan reads.
func dataBytes(f *os.File, size int64) (int64, error) {
	var n int64
	for pos := int64(0); pos < size; {
		hs, he, err := nextHole(f, pos, size)
		if err != nil {
			return size, err
		}
		n += hs - pos
		pos = max(he, hs)
	}
	return n, nil
}
