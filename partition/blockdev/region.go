package blockdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Region is the bytes of an open device or regular file that one
// partition takes: Size bytes from Off. Zero and Discard work on byte
// ranges of it (offsets from the region's start) and never outside it.
type Region struct {
	File  *os.File
	Off   int64 // where the region starts in File
	Size  int64
	Block bool // File is a block device, not a regular file
}

// Range is a byte range of a region: [Off, Off+Len).
type Range struct{ Off, Len int64 }

// clearChunk is the most one zeroing or discarding call covers, so that
// progress and cancellation come between calls (a BLKZEROOUT of a whole
// disk on a device without WRITE ZEROES is the kernel writing every
// byte, minutes on a spinning disk).
const clearChunk = 256 << 20

// ErrCannotDiscard is what Discard returns when the device or file
// cannot discard: a disk whose queue says discard_max_bytes 0, a file on
// a filesystem that cannot punch holes.
var ErrCannotDiscard = errors.New("the target cannot discard")

// check says whether rs lie inside the region.
func (r Region) check(rs []Range) error {
	for _, g := range rs {
		if g.Off < 0 || g.Len < 0 || g.Off > r.Size || g.Len > r.Size-g.Off {
			return fmt.Errorf("range %d+%d is outside the %d-byte region at %d of %s", g.Off, g.Len, r.Size, r.Off, r.File.Name())
		}
	}
	return nil
}

// Zero makes every byte of rs read zero. On a block device it asks the
// kernel to zero the sector-aligned middle of each range (BLKZEROOUT:
// the device's WRITE ZEROES where it has one, else the kernel writes
// zero pages) and writes the unaligned head and tail itself; on a
// regular file it punches a hole (FALLOC_FL_PUNCH_HOLE with KEEP_SIZE),
// or writes zeros where the filesystem cannot punch. progress, if set,
// gets the bytes of rs done so far after each step. A failure names the
// byte where it happened.
func (r Region) Zero(ctx context.Context, rs []Range, progress func(done int64)) error {
	if err := r.check(rs); err != nil {
		return err
	}
	align := int64(1)
	if r.Block {
		_, ss, err := Geometry(r.File)
		if err != nil {
			return fmt.Errorf("sector size of %s: %w", r.File.Name(), err)
		}
		align = int64(max(ss, 512))
	}
	punch := true // until the filesystem says it cannot
	var done int64
	step := func(n int64) {
		done += n
		if progress != nil {
			progress(done)
		}
	}
	for _, g := range rs {
		abs := r.Off + g.Off
		lo, hi := inward(abs, abs+g.Len, align)
		if lo >= hi { // no whole sector: write it all
			lo, hi = abs+g.Len, abs+g.Len
		}
		if err := r.writeZeros(abs, lo-abs); err != nil {
			return err
		}
		step(lo - abs)
		for at := lo; at < hi; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(hi-at, clearChunk)
			var err error
			switch {
			case r.Block:
				err = zeroOut(r.File, at, n)
				if errors.Is(err, errNotSupported) {
					err = r.writeZeros(at, n)
				}
			case punch:
				err = punchHole(r.File, at, n)
				if errors.Is(err, errNotSupported) {
					punch = false
					err = r.writeZeros(at, n)
				}
			default:
				err = r.writeZeros(at, n)
			}
			if err != nil {
				return fmt.Errorf("zero %s at byte %d (+%d): %w", r.File.Name(), at, n, err)
			}
			at += n
			step(n)
		}
		if err := r.writeZeros(hi, abs+g.Len-hi); err != nil {
			return err
		}
		step(abs + g.Len - hi)
	}
	return nil
}

// writeZeros writes n zero bytes at off of the file (an absolute offset).
func (r Region) writeZeros(off, n int64) error {
	if n <= 0 {
		return nil
	}
	buf := make([]byte, min(n, 1<<20))
	w := io.NewOffsetWriter(r.File, off)
	for left := n; left > 0; {
		k := min(left, int64(len(buf)))
		if _, err := w.Write(buf[:k]); err != nil {
			return fmt.Errorf("write zeros to %s at byte %d: %w", r.File.Name(), off+n-left, err)
		}
		left -= k
	}
	return nil
}

// Discard tells the device that rs hold nothing: BLKDISCARD (TRIM on an
// SSD, a punched hole under a loop device) on a block device whose queue
// says it can (discard_max_bytes above 0; a partition's is its disk's),
// a punched hole in a regular file. On a block device each range is
// first rounded inward to whole logical sectors, so no byte outside rs
// is touched. It returns ErrCannotDiscard, before or after discarding
// some ranges, when the device or filesystem cannot; discarded bytes read
// back as whatever the device makes of them (zeros, or old bytes).
func (r Region) Discard(ctx context.Context, rs []Range, progress func(done int64)) error {
	if err := r.check(rs); err != nil {
		return err
	}
	align := int64(1)
	if r.Block {
		n, err := discardMax(r.File)
		if err != nil {
			return fmt.Errorf("%w (%v)", ErrCannotDiscard, err)
		}
		if n <= 0 {
			return fmt.Errorf("%w: its queue says discard_max_bytes 0", ErrCannotDiscard)
		}
		_, ss, err := Geometry(r.File)
		if err != nil {
			return fmt.Errorf("sector size of %s: %w", r.File.Name(), err)
		}
		align = int64(max(ss, 512))
	}
	var done int64
	for _, g := range rs {
		lo, hi := inward(r.Off+g.Off, r.Off+g.Off+g.Len, align)
		for at := lo; at < hi; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(hi-at, clearChunk)
			var err error
			if r.Block {
				err = discardRange(r.File, at, n)
			} else {
				err = punchHole(r.File, at, n)
			}
			if errors.Is(err, errNotSupported) {
				return fmt.Errorf("%w: %v", ErrCannotDiscard, err)
			}
			if err != nil {
				return fmt.Errorf("discard %s at byte %d (+%d): %w", r.File.Name(), at, n, err)
			}
			at += n
			done += n
			if progress != nil {
				progress(done)
			}
		}
	}
	return nil
}

// inward rounds [lo, hi) inward to multiples of align; lo >= hi when no
// whole aligned block lies inside.
func inward(lo, hi, align int64) (int64, int64) {
	return (lo + align - 1) / align * align, hi / align * align
}
