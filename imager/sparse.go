package imager

import (
	"fmt"
	"os"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// Sparse image stores. Everything that reads a source on the image host
// (seeders, SpotCheck, web seeds, the rescue stick's copy) reads a part
// through OnExtents: only its extents. What lies in the gaps is never
// read, so an image file may have holes there and cost the store only
// what is used. PunchGaps makes those holes after a torrent is made.
//
// For a used-block part (GapsFree) this changes the bytes in the
// filesystem's free space (they read as zeros afterwards): the filesystem
// and the used-block torrent are unaffected, but a --raw torrent of the
// same file differs from one made before. For a part made by zero
// detection (GapsZero) nothing changes: the gaps read zeros either way.

// Punched is what PunchGaps did to one source file.
type Punched struct {
	Path   string
	Gaps   int   // ranges punched
	Bytes  int64 // bytes in them
	Before int64 // bytes the file had allocated before (st_blocks × 512)
	After  int64 // and after
}

// String is a one-line summary, such as "disk.img: 96MiB allocated,
// 14.2MiB after punching 23 gaps (81.8MiB)".
func (p Punched) String() string {
	return fmt.Sprintf("%s: %s allocated, %s after punching %d gaps (%s)", p.Path,
		bytesize.Format(p.Before), bytesize.Format(p.After), p.Gaps, bytesize.Format(p.Bytes))
}

// CheckSparse reports whether PunchGaps could work on path: a regular
// file. Call it before hashing, so a block device is refused at once.
func CheckSparse(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("source %s: %w", path, err)
	}
	switch m := st.Mode(); {
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		return fmt.Errorf("--sparse punches holes in image files, and %s is a block device, which has no holes to punch: leave out --sparse, or capture the device into a file first (dd if=%s of=X.img bs=4M conv=sparse) and image that",
			path, path)
	case !m.IsRegular():
		return fmt.Errorf("--sparse punches holes in image files, and %s is not a regular file: leave out --sparse", path)
	}
	return nil
}

// PunchGaps deallocates the gaps of part f in the regular file at path,
// its source, keeping the file's size (fallocate PUNCH_HOLE|KEEP_SIZE):
// afterwards the file costs about what f's extents hold. A part without
// extents has no gaps: nothing is done.
func PunchGaps(path string, f File) (Punched, error) {
	p := Punched{Path: path}
	if err := CheckSparse(path); err != nil {
		return p, err
	}
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return p, fmt.Errorf("open %s to punch its gaps: %w", path, err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return p, fmt.Errorf("%s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return p, CheckSparse(path)
	}
	if p.Before, err = allocated(fh); err != nil {
		return p, fmt.Errorf("%s: %w", path, err)
	}
	p.After = p.Before
	if len(f.Part.Extents) == 0 {
		return p, nil
	}
	if st.Size() != f.Part.Size {
		return p, fmt.Errorf("%s is %s but part %s is %s: is it the part's source? Nothing punched",
			path, bytesize.Format(st.Size()), f.Path, bytesize.Format(f.Part.Size))
	}
	for _, g := range f.Part.Extents.Gaps(f.Part.Size) {
		if err := punchHole(fh, g.Off, g.Len); err != nil {
			return p, fmt.Errorf("punch %s at %d (+%d): %w", path, g.Off, g.Len, err)
		}
		p.Gaps++
		p.Bytes += g.Len
	}
	if err := fh.Sync(); err != nil {
		return p, fmt.Errorf("sync %s: %w", path, err)
	}
	if p.After, err = allocated(fh); err != nil {
		return p, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}
