package initramfs

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/pxeswarm/pxeswarm/imager"
)

// readChunk is the most readBack reads at once. Chunks are cut at piece
// boundaries (a loaded torrent may have pieces down to 16 KiB), so a
// chunk never spans two pieces.
const readChunk = 1 << 20

// readBack reads the image back from the parts it was written to, after
// the caller flushed them (syncAll), with the page cache for those ranges
// dropped (a part that can, see partition.OpenParts) so the bytes come
// from the disk. It checks every piece against the torrent's SHA-1 and
// returns the SHA-256 of the image's bytes: the torrent's files
// concatenated in order, which for the usual one or more partition images
// is what `cat part1.img part2.img | sha256sum` prints on the image host.
// A piece that differs is an error wrapping ErrReadBack.
func readBack(ctx context.Context, parts []imager.Part, im *imager.Image, progress func(done int64)) (string, error) {
	if len(parts) != len(im.Files) {
		return "", fmt.Errorf("read back: %d parts for %d image files", len(parts), len(im.Files))
	}
	var readers []io.Reader
	for i, p := range parts {
		if p.Length != im.Files[i].Length {
			return "", fmt.Errorf("read back: part %d holds %d bytes of file %s, the image has %d", i+1, p.Length, im.Files[i].Path, im.Files[i].Length)
		}
		if d, ok := p.RW.(interface{ DropCache() error }); ok {
			if err := d.DropCache(); err != nil {
				return "", fmt.Errorf("read back part %d: drop its cache: %w", i+1, err)
			}
		}
		readers = append(readers, io.NewSectionReader(p.RW, 0, p.Length))
	}
	src := io.MultiReader(readers...)

	// Read ahead on one goroutine while this one hashes: the disk and the
	// two hashes overlap.
	type chunk struct {
		b   []byte
		err error
	}
	const depth = 4
	free := make(chan []byte, depth)
	for range depth {
		free <- make([]byte, readChunk)
	}
	full := make(chan chunk, depth)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(full)
		for left := im.Length; left > 0; {
			var b []byte
			select {
			case b = <-free:
			case <-rctx.Done():
				return
			}
			n := int(min(int64(readChunk), im.PieceLength, left))
			_, err := io.ReadFull(src, b[:n])
			full <- chunk{b[:n], err}
			if err != nil {
				return
			}
			left -= int64(n)
		}
	}()
	defer wg.Wait()
	defer stop()

	whole := sha256.New()
	var piece hash.Hash = sha1.New()
	var off, inPiece int64
	idx := 0
	for c := range full {
		if c.err != nil {
			return "", fmt.Errorf("read back the image at byte %d: %w", off, c.err)
		}
		var pw sync.WaitGroup
		pw.Add(1)
		go func() { defer pw.Done(); piece.Write(c.b) }()
		whole.Write(c.b)
		pw.Wait()
		off += int64(len(c.b))
		inPiece += int64(len(c.b))
		if inPiece == im.PieceLength || off == im.Length {
			var sum [sha1.Size]byte
			piece.Sum(sum[:0])
			if sum != im.PieceHash(idx) {
				return "", fmt.Errorf("%w: piece %d (bytes %d to %d) read back from the disk is not what was written",
					ErrReadBack, idx, off-inPiece, off)
			}
			piece.Reset()
			idx++
			inPiece = 0
		}
		free <- c.b[:cap(c.b)]
		if progress != nil {
			progress(off)
		}
		if err := ctx.Err(); err != nil {
			return "", err
		}
	}
	if off != im.Length {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		return "", errors.New("read back: stopped early")
	}
	return hex.EncodeToString(whole.Sum(nil)), nil
}
