package imager

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// StateCopying: an image is being copied from a local source (a rescue
// stick) to its target, without a swarm.
const StateCopying State = "copying"

// ErrBadSource: a piece read from a copy's source is not what the torrent
// says. Nothing of that piece was written.
var ErrBadSource = errors.New("copy source does not match the image")

// CopyConfig copies an image from one set of parts to another without a
// swarm: a rescue stick's data partition to the machine's disk. Every
// piece is read from From and checked against the torrent's SHA-1 before
// it is written to To, so a damaged stick never writes a byte it cannot
// vouch for.
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

// Run copies the image and returns the SHA-256 of its bytes (the
// torrent's files concatenated in order). The caller syncs and closes To.
func (c CopyConfig) Run(ctx context.Context) (string, error) {
	im := c.Image
	if im == nil {
		return "", errors.New("copy: no image")
	}
	for _, ps := range []struct {
		what  string
		parts []Part
	}{{"source", c.From}, {"target", c.To}} {
		if len(ps.parts) != len(im.Files) {
			return "", fmt.Errorf("%w: copy: %d %s parts for %d image files", ErrTargets, len(ps.parts), ps.what, len(im.Files))
		}
		for i, p := range ps.parts {
			if p.Length != im.Files[i].Length {
				return "", fmt.Errorf("%w: copy: %s part %d holds %d bytes, image file %s has %d", ErrTargets, ps.what, i, p.Length, im.Files[i].Path, im.Files[i].Length)
			}
		}
	}
	every := c.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	from, to := newSpan(c.From), newSpan(c.To)

	// One goroutine reads pieces ahead while this one checks and writes:
	// the stick and the disk work at the same time.
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
	last := start
	var done int64
	report := func(force bool) {
		now := time.Now()
		if c.Progress == nil || (!force && now.Sub(last) < every) {
			return
		}
		last = now
		p := Progress{State: StateCopying, Total: im.Length, Done: done, Elapsed: now.Sub(start).Round(time.Millisecond)}
		if s := now.Sub(start).Seconds(); s > 0 {
			p.Rate = float64(done) / s
		}
		if done == im.Length {
			p.Took = p.Elapsed
		}
		c.Progress(p)
	}
	report(true)
	whole := sha256.New()
	for p := range full {
		off := int64(p.i) * im.PieceLength
		if p.err != nil {
			return "", fmt.Errorf("copy: read piece %d (bytes %d to %d) from the source: %w", p.i, off, off+int64(len(p.b)), p.err)
		}
		var sum [sha1.Size]byte
		var hw sync.WaitGroup
		hw.Add(1)
		go func() { defer hw.Done(); whole.Write(p.b) }()
		sum = sha1.Sum(p.b)
		hw.Wait()
		if sum != im.PieceHash(p.i) {
			return "", fmt.Errorf("%w: piece %d (bytes %d to %d) on the source fails its SHA-1 check: the source is damaged or holds another image; nothing of this piece was written",
				ErrBadSource, p.i, off, off+int64(len(p.b)))
		}
		if _, err := to.WriteAt(p.b, off); err != nil {
			return "", fmt.Errorf("copy: write piece %d (bytes %d to %d) to the target: %w", p.i, off, off+int64(len(p.b)), err)
		}
		done += int64(len(p.b))
		free <- p.b[:cap(p.b)]
		report(false)
		if err := ctx.Err(); err != nil {
			return "", err
		}
	}
	if done != im.Length {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		return "", errors.New("copy: stopped early")
	}
	report(true)
	return hex.EncodeToString(whole.Sum(nil)), nil
}
