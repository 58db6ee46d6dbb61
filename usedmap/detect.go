package usedmap

import (
	"bytes"
	"fmt"
	"io"
)

// Detect recognises the filesystem on the size bytes r holds and returns
// its used map. It reads only metadata: superblocks, descriptors, bitmaps,
// FATs, a few MFT records. An unrecognised filesystem (or one that
// matches more than one signature) maps whole, with kind [Unknown]; a
// volume that cannot be mapped safely is an error wrapping
// [ErrHibernated], [ErrDirty], [ErrBitLocker] or [ErrCorrupt].
func Detect(r io.ReaderAt, size int64) (Map, error) {
	if size < 0 {
		return Map{}, fmt.Errorf("usedmap: negative partition size %d", size)
	}
	head := make([]byte, min(size, 64<<10))
	if err := readAt(r, size, head, 0); err != nil {
		return Map{}, fmt.Errorf("usedmap: %w", err)
	}
	var found []func() (Map, error)
	if isExt(head) {
		found = append(found, func() (Map, error) { return extMap(r, size) })
	}
	if isNTFS(head) {
		found = append(found, func() (Map, error) { return ntfsMap(r, size) })
	}
	if isBitLocker(head) {
		found = append(found, func() (Map, error) {
			return Map{}, fmt.Errorf("%w: suspend or decrypt BitLocker first (in Windows: manage-bde -off C:, or Suspend-BitLocker), or capture the disk whole", ErrBitLocker)
		})
	}
	if isFAT(head) {
		found = append(found, func() (Map, error) { return fatMap(r, size) })
	}
	if page := swapPage(head); page > 0 {
		found = append(found, func() (Map, error) {
			b := builder{size: size}
			b.add(0, page)
			return b.done(Swap, page), nil
		})
	}
	if len(found) != 1 {
		return Whole(size), nil
	}
	m, err := found[0]()
	if err != nil {
		return Map{}, fmt.Errorf("usedmap: %w", err)
	}
	return m, nil
}

// Whole is the map of a partition whose filesystem is not known: all of it.
func Whole(size int64) Map {
	b := builder{size: size}
	b.add(0, size)
	return b.done(Unknown, 512)
}

func isBitLocker(head []byte) bool {
	return len(head) >= 11 && bytes.Equal(head[3:11], []byte("-FVE-FS-"))
}

// swapPage returns the page size of a Linux swap header ("SWAPSPACE2" in
// the last 10 bytes of the first page), or 0. A swap area holding a
// hibernation image (S1SUSPEND, ...) is not recognised: it maps whole.
func swapPage(head []byte) int64 {
	for _, page := range []int{4096, 8192, 16384, 65536} {
		if len(head) >= page && string(head[page-10:page]) == "SWAPSPACE2" {
			return int64(page)
		}
	}
	return 0
}
