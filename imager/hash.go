package imager

import (
	"context"
	"crypto/sha1"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// hashPieces reads [0, length) of r sequentially, one piece at a time, and
// hashes the pieces on workers goroutines. One reader keeps the disk access
// sequential (good for spinning disks and read-ahead); the workers keep
// every core busy with SHA-1, so the disk is the limit rather than the hash.
// done is called once per piece, from worker goroutines; progress is
// advanced by each piece's length after it is hashed.
func hashPieces(ctx context.Context, r io.ReaderAt, length, pieceLen int64, workers int,
	progress *atomic.Int64, done func(i int, sum [sha1.Size]byte)) error {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	n := int((length + pieceLen - 1) / pieceLen)
	type job struct {
		i   int
		buf []byte
	}
	// Two buffers per worker: one being hashed, one being read into.
	free := make(chan []byte, 2*workers)
	for range 2 * workers {
		free <- make([]byte, pieceLen)
	}
	jobs := make(chan job, workers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				sum := sha1.Sum(j.buf)
				done(j.i, sum)
				if progress != nil {
					progress.Add(int64(len(j.buf)))
				}
				free <- j.buf[:cap(j.buf)]
			}
		}()
	}
	var readErr error
	for i := 0; i < n; i++ {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			readErr = ctx.Err()
		}
		if readErr != nil {
			break
		}
		off := int64(i) * pieceLen
		buf = buf[:min(pieceLen, length-off)]
		if _, err := r.ReadAt(buf, off); err != nil {
			readErr = fmt.Errorf("read piece %d at offset %d: %w", i, off, err)
			break
		}
		jobs <- job{i, buf}
	}
	close(jobs)
	wg.Wait()
	return readErr
}
