package imager

import (
	"fmt"
	"io"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// Part is one piece of an image's byte range that lives in its own
// device or file: the torrent's "file" for one partition.
type Part struct {
	RW     ReadWriterAt // where the bytes live
	Length int64        // bytes of the image in this part
}

// ReadWriterAt is what a source or target offers. A seeding source only
// needs ReadAt; writes to it return an error.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// span maps the torrent's linear byte range onto consecutive parts.
type span struct {
	parts  []Part
	starts []int64 // starts[i] is the torrent offset of parts[i]
	length int64
}

func newSpan(parts []Part) *span {
	s := &span{parts: parts, starts: make([]int64, len(parts))}
	for i, p := range parts {
		s.starts[i] = s.length
		s.length += p.Length
	}
	return s
}

// each calls f for every part overlapping [off, off+n), with the offset
// within that part and the slice bounds [lo, hi) within the caller's buffer.
func (s *span) each(off int64, n int, f func(i int, p Part, partOff int64, lo, hi int) (int, error)) (int, error) {
	if off < 0 || off > s.length {
		return 0, fmt.Errorf("offset %d outside image of %d bytes", off, s.length)
	}
	done := 0
	for i, p := range s.parts {
		if done == n {
			break
		}
		cur := off + int64(done)
		start, end := s.starts[i], s.starts[i]+p.Length
		if cur >= end || cur < start {
			continue
		}
		want := min(int64(n-done), end-cur)
		got, err := f(i, p, cur-start, done, done+int(want))
		done += got
		if err != nil {
			return done, err
		}
		if int64(got) < want {
			return done, io.ErrUnexpectedEOF
		}
	}
	if done < n {
		return done, io.EOF
	}
	return done, nil
}

func (s *span) ReadAt(b []byte, off int64) (int, error) {
	return s.each(off, len(b), func(_ int, p Part, po int64, lo, hi int) (int, error) {
		n, err := p.RW.ReadAt(b[lo:hi], po)
		if err == io.EOF && n == hi-lo {
			err = nil
		}
		return n, err
	})
}

func (s *span) WriteAt(b []byte, off int64) (int, error) {
	return s.each(off, len(b), func(i int, p Part, po int64, lo, hi int) (int, error) {
		n, err := p.RW.WriteAt(b[lo:hi], po)
		if err != nil {
			err = fmt.Errorf("%w: part %d at byte %d (%s of %s): %w", ErrWrite, i+1, po+int64(n), bytesize.Format(po+int64(n)), bytesize.Format(p.Length), err)
		}
		return n, err
	})
}
