package imager

import (
	"crypto/sha1"
	"fmt"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// OpenSources opens paths read-only as im's sources, one per part in
// order, by the rule a trusted seeder reads them with: a regular file holds
// exactly its part, a block device at least its part. The caller closes
// the devices.
func (im *Image) OpenSources(paths []string) ([]*Device, error) {
	if err := im.checkCount(len(paths)); err != nil {
		return nil, err
	}
	devs := make([]*Device, 0, len(paths))
	for i, p := range paths {
		f := im.Files[i]
		d, err := OpenSource(p)
		if err == nil && (d.Size < f.Span() || (!d.Block && d.Size != f.Span())) {
			err = fmt.Errorf("source %s is %s but part %s of %s is %s: is this the right source?",
				p, bytesize.Format(d.Size), f.Path, im.Name, bytesize.Format(f.Span()))
			d.Close()
		}
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			return nil, err
		}
		devs = append(devs, d)
	}
	return devs, nil
}

// SourceParts maps opened sources (OpenSources) to the parts a session or
// SpotCheck reads.
func (im *Image) SourceParts(devs []*Device) []Part {
	parts := make([]Part, len(devs))
	for i, d := range devs {
		parts[i] = Part{RW: OnExtents(d, im.Files[i].Part.Extents), Length: im.Files[i].Length}
	}
	return parts
}

// SpotCheck hashes a few pieces of parts (the first piece of every part
// and the last piece of the image) and compares them with the torrent: a
// cheap test that a torrent and its sources belong together, before a
// seeder trusts the sources without reading them all. It reads at most
// len(parts)+1 pieces. A mismatch wraps ErrMismatch.
func (im *Image) SpotCheck(parts []Part) error {
	if err := checkParts(im, parts); err != nil {
		return err
	}
	if im.NumPieces() == 0 {
		return nil
	}
	sp := newSpan(parts)
	var sample []int
	for _, f := range im.Files {
		if f.Length > 0 {
			sample = append(sample, int(f.Offset/im.PieceLength))
		}
	}
	sample = append(sample, im.NumPieces()-1)
	buf := make([]byte, im.PieceLength)
	checked := map[int]bool{}
	for _, i := range sample {
		if checked[i] {
			continue
		}
		checked[i] = true
		b := buf[:im.pieceSize(i)]
		if _, err := sp.ReadAt(b, int64(i)*im.PieceLength); err != nil {
			return fmt.Errorf("read piece %d of %s from its sources: %w", i, im.Name, err)
		}
		if sha1.Sum(b) != im.PieceHash(i) {
			return fmt.Errorf("%w: piece %d of %s (at byte %d) differs from the torrent: give the sources the torrent was made from, or make the torrent again from these (pxeswarm mktorrent)",
				ErrMismatch, i, im.Name, int64(i)*im.PieceLength)
		}
	}
	return nil
}

// checkCount checks that n paths name one per part.
func (im *Image) checkCount(n int) error {
	if n != len(im.Files) {
		return fmt.Errorf("%w: image %s has %d parts (%s), got %d paths: name one per part, in order",
			ErrTargets, im.Name, len(im.Files), im.fileNames(), n)
	}
	return nil
}

// fileNames lists the parts' names for messages.
func (im *Image) fileNames() string {
	var out []byte
	for i, f := range im.Files {
		if i > 0 {
			out = append(out, ", "...)
		}
		out = append(out, f.Path...)
	}
	return string(out)
}
