package imager

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// StateCopying: an image is being copied from a local source (a rescue
// stick) to its target, without a swarm.
const StateCopying State = "copying"

// ErrBadSource: a piece read from a copy's source is not what the torrent
// says. Nothing of that piece was written.
var ErrBadSource = errors.New("copy source does not match the image")

// CopyConfig copies an image from one set of parts to another without a
// swarm: a rescue stick's data partition to the machine's disk, or image
// files onto the stick. Every piece is read from From and checked against
// the torrent's SHA-1 before it is written to To, so a damaged source never
// writes a byte it cannot vouch for.
type CopyConfig struct {
	Image *Image
	// From and To hold one part per image file, in order (To usually
	// from partition.OpenParts; From opened read-only).
	From, To []Part
	// Progress, if set, is called every ProgressEvery (default 1 s) and
	// once at the end, with State StateCopying.
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// Run copies the image. The caller syncs and closes To.
func (c CopyConfig) Run(ctx context.Context) error {
	im := c.Image
	if im == nil {
		return errors.New("copy: no image")
	}
	if err := checkParts(im, c.From); err != nil {
		return fmt.Errorf("copy source: %w", err)
	}
	if err := checkParts(im, c.To); err != nil {
		return fmt.Errorf("copy target: %w", err)
	}
	from, to := newSpan(c.From), newSpan(c.To)

	// One goroutine reads pieces ahead while this one checks and writes:
	// source and target work at the same time.
	type piece struct {
		i   int
		b   []byte
		err error
	}
	depth := 3
	if im.PieceLength > 16<<20 {
		depth = 2
	}
	free := make(chan []byte, depth)
	for range depth {
		free <- make([]byte, im.PieceLength)
	}
	full := make(chan piece, depth)
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(full)
		for i := range im.NumPieces() {
			var b []byte
			select {
			case b = <-free:
			case <-rctx.Done():
				return
			}
			b = b[:im.pieceSize(i)]
			_, err := from.ReadAt(b, int64(i)*im.PieceLength)
			full <- piece{i, b, err}
			if err != nil {
				return
			}
		}
	}()
	defer wg.Wait()
	defer stop()

	start := time.Now()
	var done atomic.Int64
	var rate rateMeter
	every := c.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	stopReport := ReportEvery(rctx, every, func() {
		if c.Progress == nil {
			return
		}
		now, d := time.Now(), done.Load()
		p := Progress{State: StateCopying, Total: im.Length, Done: d, Rate: rate.update(now, d), Elapsed: now.Sub(start).Round(time.Millisecond)}
		if d == im.Length {
			p.Took = p.Elapsed
		}
		c.Progress(p)
	})
	for p := range full {
		off := int64(p.i) * im.PieceLength
		if p.err != nil {
			return fmt.Errorf("copy: read piece %d (bytes %d to %d) from the source: %w", p.i, off, off+int64(len(p.b)), p.err)
		}
		if sha1.Sum(p.b) != im.PieceHash(p.i) {
			return fmt.Errorf("%w: piece %d (bytes %d to %d) on the source fails its SHA-1 check: the source is damaged or holds another image; nothing of this piece was written",
				ErrBadSource, p.i, off, off+int64(len(p.b)))
		}
		if _, err := to.WriteAt(p.b, off); err != nil {
			return fmt.Errorf("copy: write piece %d (bytes %d to %d) to the target: %w", p.i, off, off+int64(len(p.b)), err)
		}
		done.Add(int64(len(p.b)))
		free <- p.b[:cap(p.b)]
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if done.Load() != im.Length {
		if err := ctx.Err(); err != nil {
			return err
		}
		return errors.New("copy: stopped early")
	}
	stopReport() // the last report: all done
	return nil
}
