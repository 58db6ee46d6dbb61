package imager

import (
	"context"
	"crypto/sha1"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// Streaming piece hashing for Create. The torrent's byte stream is written
// in order by one goroutine (the reader) into an assembler, which cuts it
// into pieces and hands each whole piece to a pool of hashing workers. The
// stream need not be known in advance: zero detection (zeros.go) decides
// which zero runs to leave out while it reads, and it may keep two
// candidate streams for a while (fork), choosing one when its source ends.

// hashPool hashes pieces on worker goroutines.
type hashPool struct {
	pieceLen int64
	jobs     chan hashJob
	free     chan []byte
	wg       sync.WaitGroup
}

type hashJob struct {
	buf []byte
	dst *[sha1.Size]byte
}

// newHashPool starts workers hashing goroutines (0: one per CPU); close
// stops them.
func newHashPool(pieceLen int64, workers int) *hashPool {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	p := &hashPool{pieceLen: pieceLen, jobs: make(chan hashJob, workers), free: make(chan []byte, 2*workers)}
	for range workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for j := range p.jobs {
				*j.dst = sha1.Sum(j.buf)
				select {
				case p.free <- j.buf[:0]:
				default:
				}
			}
		}()
	}
	return p
}

// buffer returns an empty piece buffer: a hashed one, or a new one. The
// number of buffers stays bounded: at most workers queued, workers being
// hashed, 2×workers free, and one per live assembler.
func (p *hashPool) buffer() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, 0, p.pieceLen)
	}
}

// close waits until every submitted piece is hashed.
func (p *hashPool) close() {
	close(p.jobs)
	p.wg.Wait()
}

// assembler cuts one candidate torrent byte stream into pieces. Its sums
// are filled in by the pool's workers; read them only after pool.close.
type assembler struct {
	pool *hashPool
	buf  []byte // the piece being filled
	sums []*[sha1.Size]byte
	n    int64 // bytes written
}

func newAssembler(p *hashPool) *assembler {
	return &assembler{pool: p, buf: p.buffer()}
}

// fork returns an assembler that goes on from where a is, independently.
// The pieces a already handed on are shared.
func (a *assembler) fork() *assembler {
	b := &assembler{pool: a.pool, buf: append(a.pool.buffer(), a.buf...), n: a.n}
	b.sums = append(make([]*[sha1.Size]byte, 0, len(a.sums)+64), a.sums...)
	return b
}

// discard drops a (its pieces in flight are hashed for nothing).
func (a *assembler) discard() {
	a.buf = nil
	a.sums = nil
}

// grown hands the piece on once it is whole.
func (a *assembler) grown(ctx context.Context) error {
	if int64(len(a.buf)) < a.pool.pieceLen {
		return nil
	}
	return a.submit(ctx)
}

func (a *assembler) submit(ctx context.Context) error {
	dst := new([sha1.Size]byte)
	a.sums = append(a.sums, dst)
	select {
	case a.pool.jobs <- hashJob{buf: a.buf, dst: dst}:
	case <-ctx.Done():
		return ctx.Err()
	}
	a.buf = a.pool.buffer()
	return nil
}

// write appends b to the stream.
func (a *assembler) write(ctx context.Context, b []byte) error {
	a.n += int64(len(b))
	for len(b) > 0 {
		k := min(int64(len(b)), a.pool.pieceLen-int64(len(a.buf)))
		a.buf = append(a.buf, b[:k]...)
		b = b[k:]
		if err := a.grown(ctx); err != nil {
			return err
		}
	}
	return nil
}

// zeros appends n zero bytes to the stream.
func (a *assembler) zeros(ctx context.Context, n int64) error {
	a.n += n
	for n > 0 {
		at := len(a.buf)
		k := min(n, a.pool.pieceLen-int64(at))
		a.buf = a.buf[:at+int(k)]
		clear(a.buf[at:])
		n -= k
		if err := a.grown(ctx); err != nil {
			return err
		}
	}
	return nil
}

// readFrom appends n bytes of r from off on, reading straight into the
// piece buffers (one read per piece when the stream is piece-aligned).
// done, if set, is called with the bytes of each read.
func (a *assembler) readFrom(ctx context.Context, r io.ReaderAt, off, n int64, done func(int64)) error {
	a.n += n
	for n > 0 {
		at := len(a.buf)
		k := min(n, a.pool.pieceLen-int64(at))
		a.buf = a.buf[:at+int(k)]
		if got, err := r.ReadAt(a.buf[at:], off); int64(got) < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read %d bytes at offset %d: %w", k, off, err)
		}
		off += k
		n -= k
		if done != nil {
			done(k)
		}
		if err := a.grown(ctx); err != nil {
			return err
		}
	}
	return nil
}

// finish hands on the last, short piece, if any. Call it once, at the
// end of the stream.
func (a *assembler) finish(ctx context.Context) error {
	if len(a.buf) == 0 {
		return nil
	}
	return a.submit(ctx)
}

// pieces returns the concatenated piece hashes; call it after pool.close.
func (a *assembler) pieces() []byte {
	out := make([]byte, 0, len(a.sums)*sha1.Size)
	for _, s := range a.sums {
		out = append(out, s[:]...)
	}
	return out
}
