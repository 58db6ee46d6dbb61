package imager

import (
	"context"
	"fmt"

	g "github.com/anacrolix/generics"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// Storage is the anacrolix storage.ClientImpl that reads and writes pieces
// by offset straight on the image's parts (block devices, partitions or
// files): no temporary files, no database. Writes arrive concurrently from
// many peer connections; each is one pwrite.
type Storage struct {
	im   *Image
	sp   *span
	comp *completion
	// failed is told of the first write error: anacrolix only disables the
	// torrent on one, and the session would wait forever.
	failed func(error)
}

var _ storage.ClientImpl = (*Storage)(nil)

// NewStorage maps the image's files onto parts, one per file, in order.
// failed, if set, is called on every write error.
func newStorage(im *Image, parts []Part, comp *completion, failed func(error)) (*Storage, error) {
	if err := checkParts(im, parts); err != nil {
		return nil, err
	}
	return &Storage{im: im, sp: newSpan(parts), comp: comp, failed: failed}, nil
}

// checkParts checks that parts hold one part per image file, each as long
// as its file.
func checkParts(im *Image, parts []Part) error {
	if len(parts) != len(im.Files) {
		return fmt.Errorf("%w: image %s has %d parts, got %d targets: name one target per part", ErrTargets, im.Name, len(im.Files), len(parts))
	}
	for i, p := range parts {
		if p.Length != im.Files[i].Length {
			return fmt.Errorf("part %d: %d bytes mapped for a %d-byte file", i, p.Length, im.Files[i].Length)
		}
	}
	return nil
}

// OpenTorrent implements storage.ClientImpl for this storage's one image.
func (s *Storage) OpenTorrent(_ context.Context, _ *metainfo.Info, ih metainfo.Hash) (storage.TorrentImpl, error) {
	if ih != s.im.InfoHash {
		return storage.TorrentImpl{}, fmt.Errorf("storage for %s asked to open %s", s.im.InfoHash, ih)
	}
	return storage.TorrentImpl{
		PieceWithHash: func(p metainfo.Piece, _ g.Option[[]byte]) storage.PieceImpl {
			return piece{s: s, i: p.Index(), off: p.Offset()}
		},
		Close: func() error { return nil },
	}, nil
}

type piece struct {
	s   *Storage
	i   int
	off int64
}

func (p piece) ReadAt(b []byte, off int64) (int, error) { return p.s.sp.ReadAt(b, p.off+off) }
func (p piece) WriteAt(b []byte, off int64) (int, error) {
	n, err := p.s.sp.WriteAt(b, p.off+off)
	if err != nil && p.s.failed != nil {
		p.s.failed(fmt.Errorf("piece %d: %w", p.i, err))
	}
	return n, err
}
func (p piece) MarkComplete() error    { p.s.comp.set(p.i, true); return nil }
func (p piece) MarkNotComplete() error { p.s.comp.set(p.i, false); return nil }
func (p piece) Completion() storage.Completion {
	return storage.Completion{Ok: true, Complete: p.s.comp.get(p.i)}
}
