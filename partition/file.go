package partition

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/diskfs/go-diskfs/backend"
)

// file adapts an io.ReaderAt (and optionally io.WriterAt) of a known size
// to go-diskfs' backend.File and backend.WritableFile, so tables are read
// and written on plain files, block devices and byte slices alike. Every
// access is bounded by size: go-diskfs never reads or writes past the
// disk, whatever a damaged header says.
type file struct {
	r    io.ReaderAt
	w    io.WriterAt // nil: read-only
	size int64
	off  int64 // for Read and Seek
}

var (
	_ backend.File         = (*file)(nil)
	_ backend.WritableFile = (*file)(nil)
)

func (f *file) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	short := false
	if rest := f.size - off; int64(len(b)) > rest {
		b, short = b[:rest], true
	}
	n, err := f.r.ReadAt(b, off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

func (f *file) WriteAt(b []byte, off int64) (int, error) {
	if f.w == nil {
		return 0, backend.ErrIncorrectOpenMode
	}
	if off < 0 || off > f.size || int64(len(b)) > f.size-off {
		return 0, fmt.Errorf("write of %d bytes at %d is outside the %d-byte disk", len(b), off, f.size)
	}
	return f.w.WriteAt(b, off)
}

// Sync passes through to the underlying file, so go-diskfs' ordered,
// synced GPT writes (backup first, then primary) keep their meaning.
func (f *file) Sync() error {
	if s, ok := f.w.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}

func (f *file) Read(b []byte) (int, error) {
	n, err := f.ReadAt(b, f.off)
	f.off += int64(n)
	return n, err
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	f.off = offset
	return offset, nil
}

func (f *file) Close() error               { return nil }
func (f *file) Stat() (fs.FileInfo, error) { return fileInfo(f.size), nil }

type fileInfo int64

func (fi fileInfo) Name() string       { return "disk" }
func (fi fileInfo) Size() int64        { return int64(fi) }
func (fi fileInfo) Mode() fs.FileMode  { return 0o600 }
func (fi fileInfo) ModTime() time.Time { return time.Time{} }
func (fi fileInfo) IsDir() bool        { return false }
func (fi fileInfo) Sys() any           { return nil }
