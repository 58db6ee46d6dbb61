package imager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition/blockdev"
)

// StateGaps: every piece is on the targets; the gaps between a
// used-block image's extents are being zeroed (GapsZero) or discarded.
const StateGaps State = "gaps"

// ErrZeroGaps: a target's GapsZero gaps could not be zeroed. The extents
// are written, but the partition does not hold the source's bytes.
var ErrZeroGaps = errors.New("cannot zero the gaps between the image's extents")

// Regioner is what a part's RW offers when its bytes are a region of an
// open device or file ([blockdev.Region]): partition.OpenParts' windows
// and OpenTarget's devices. OnExtents passes it through. FinishGaps needs
// it to reach the gaps, which the extents hide.
type Regioner interface {
	Region() blockdev.Region
}

// regionOf returns the region under a part's RW, seen through OnExtents.
func regionOf(rw ReadWriterAt) (blockdev.Region, bool) {
	if m, ok := rw.(*mapped); ok {
		rw = m.rw
	}
	r, ok := rw.(Regioner)
	if !ok {
		return blockdev.Region{}, false
	}
	return r.Region(), true
}

// gapWork is one part's gaps and what to do with them.
type gapWork struct {
	i    int // file index
	r    blockdev.Region
	gaps []blockdev.Range
	zero bool // GapsZero: must read zero; else discard where the device can
	n    int64
}

// gapsOf lists the parts of im whose gaps need work: every GapsZero
// part, and with discard every GapsFree part too.
func gapsOf(im *Image, parts []Part, discard bool) ([]gapWork, error) {
	if len(parts) != len(im.Files) {
		return nil, fmt.Errorf("%d parts for the %d files of image %s", len(parts), len(im.Files), im.Name)
	}
	var out []gapWork
	for i, f := range im.Files {
		if len(f.Part.Extents) == 0 {
			continue
		}
		w := gapWork{i: i}
		switch f.Part.Gaps {
		case GapsZero:
			w.zero = true
		case GapsFree:
			if !discard {
				continue
			}
		default: // Parse refuses them; an Image built by hand may not
			return nil, fmt.Errorf("part %d (%s) of image %s: gaps %.40q, want %q or %q: update pxeswarm",
				i+1, f.Path, im.Name, f.Part.Gaps, GapsFree, GapsZero)
		}
		r, ok := regionOf(parts[i].RW)
		switch {
		case !ok && w.zero:
			return nil, fmt.Errorf("%w: part %d (%s) is not written to a device or file whose gaps can be reached", ErrZeroGaps, i+1, f.Path)
		case !ok:
			continue
		case r.Size < f.Part.Size:
			return nil, fmt.Errorf("part %d (%s): its partition on the target is %d bytes, the layout's is %d", i+1, f.Path, r.Size, f.Part.Size)
		}
		w.r = r
		for _, g := range f.Part.Extents.Gaps(f.Part.Size) {
			w.gaps = append(w.gaps, blockdev.Range{Off: g.Off, Len: g.Len})
			w.n += g.Len
		}
		if w.n > 0 {
			out = append(out, w)
		}
	}
	return out, nil
}

// FinishGaps makes the gaps between the extents of im's used-block parts
// what their layouts say, once every piece is written to parts (the
// image's files in order) and flushed:
//
//   - GapsZero: every gap byte is zeroed ([blockdev.Region.Zero]); a
//     part that cannot be zeroed is an error wrapping [ErrZeroGaps]. The
//     extents are written by then, so the target is half-written.
//   - GapsFree: left alone, unless discard asks for the free space to be
//     discarded ([blockdev.Region.Discard]: TRIM, a punched hole) where
//     the device can; where it cannot, one log line, and nothing else
//     happens. Discarding is a favour to the device (SSD wear, a thin or
//     sparse image), never a condition of success: a failure is logged.
//
// Extents are never touched: only the bytes between them (discards are
// rounded inward to whole sectors). parts' RW must reach their regions
// (Regioner, as partition.OpenParts and OpenTarget give) for parts that
// need work. progress, if set, gets the gap bytes done and the total;
// callers flush the targets afterwards. It is the one gap step of every
// writer: the agent, and sessions that open their own targets (Config
// Paths, `pxeswarm fetch`).
func FinishGaps(ctx context.Context, log *slog.Logger, im *Image, parts []Part, discard bool, progress func(done, total int64)) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	work, err := gapsOf(im, parts, discard)
	if err != nil {
		return err
	}
	var total, base int64
	for _, w := range work {
		total += w.n
	}
	if len(work) == 0 {
		return nil
	}
	report := func(done int64) {
		if progress != nil {
			progress(base+done, total)
		}
	}
	report(0)
	cannot := map[string]bool{} // devices that said they cannot discard
	for _, w := range work {
		f := im.Files[w.i]
		what := fmt.Sprintf("part %d (%s)", w.i+1, f.Path)
		start := time.Now()
		if w.zero {
			log.Info("zeroing the gaps between the extents", "part", what, "gaps", len(w.gaps), "bytes", bytesize.Format(w.n))
			if err := w.r.Zero(ctx, w.gaps, report); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("%w: %s: %w", ErrZeroGaps, what, err)
			}
			log.Info("zeroed the gaps", "part", what, "took", time.Since(start).Round(time.Millisecond))
		} else {
			err := w.r.Discard(ctx, w.gaps, report)
			name := w.r.File.Name()
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, blockdev.ErrCannotDiscard):
				if !cannot[name] {
					log.Info("the target cannot discard; its free space keeps its old bytes", "target", name, "why", err)
				}
				cannot[name] = true
			case err != nil:
				log.Warn("discarding the free space failed part-way; the image is not affected", "part", what, "err", err)
			default:
				log.Info("discarded the free space", "part", what, "gaps", len(w.gaps), "bytes", bytesize.Format(w.n), "took", time.Since(start).Round(time.Millisecond))
			}
		}
		base += w.n
		report(0)
	}
	return nil
}

// zeroEdge is how many bytes at each end of a zero gap CheckZeroGaps
// reads, and zeroSample how many gaps per part it reads at most.
const (
	zeroEdge   = 4 << 10
	zeroSample = 64
)

// CheckZeroGaps is the read-back's look at the gaps FinishGaps zeroed:
// for each GapsZero part it reads the first and last 4 KiB of up to 64
// of its gaps, spread over the part, past the page cache where the RW
// can drop it, and says which is not zero. It is a sample, not a proof:
// zeroing is one kernel call per range whose failure FinishGaps already
// reports, and what would go wrong on this side is the range arithmetic
// (an offset, an alignment), which shows at the edges; reading every gap
// would cost as much as the gaps are large (most of the disk, for a
// nearly empty one). A GapsZero part whose region cannot be reached is
// an error wrapping ErrZeroGaps, as in FinishGaps.
func CheckZeroGaps(ctx context.Context, im *Image, parts []Part) error {
	work, err := gapsOf(im, parts, false)
	if err != nil {
		return err
	}
	buf := make([]byte, zeroEdge)
	zero := make([]byte, zeroEdge)
	for _, w := range work {
		if d, ok := parts[w.i].RW.(interface{ DropCache() error }); ok {
			if err := d.DropCache(); err != nil {
				return fmt.Errorf("part %d: drop its cache: %w", w.i+1, err)
			}
		}
		step := max(1, len(w.gaps)/zeroSample)
		for j := 0; j < len(w.gaps); j += step {
			if err := ctx.Err(); err != nil {
				return err
			}
			g := w.gaps[j]
			n := min(g.Len, zeroEdge)
			for _, off := range []int64{g.Off, g.Off + g.Len - n} {
				b := buf[:n]
				if _, err := w.r.File.ReadAt(b, w.r.Off+off); err != nil {
					return fmt.Errorf("part %d: read its gap at byte %d: %w", w.i+1, off, err)
				}
				if !bytes.Equal(b, zero[:n]) {
					return fmt.Errorf("%w: part %d (%s): the gap at byte %d (+%d) does not read zero after zeroing", ErrZeroGaps, w.i+1, im.Files[w.i].Path, g.Off, g.Len)
				}
			}
		}
	}
	return nil
}
