package usedmap

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// Kinds of filesystem a [Map] can name.
const (
	Ext2    = "ext2"
	Ext3    = "ext3"
	Ext4    = "ext4"
	FAT12   = "fat12"
	FAT16   = "fat16"
	FAT32   = "fat32"
	NTFS    = "ntfs"
	Swap    = "swap"
	Unknown = "unknown" // not recognised: the whole range is used
)

// MaxExtents bounds the extents [Detect] keeps while it reads: past it,
// the smallest gaps are merged (see [Merge]), so memory stays bounded on
// any device. Merging only ever adds bytes to the map, never drops any.
const MaxExtents = 1 << 20

// Sentinel errors for the volumes Detect refuses. Each returned error
// wraps one of these and says what to do.
var (
	// ErrHibernated: Windows left the NTFS volume hibernated (Fast
	// Startup): its real state is in hiberfil.sys, not on the volume.
	ErrHibernated = errors.New("the Windows volume is hibernated")
	// ErrDirty: the volume was not shut down cleanly (NTFS dirty flag,
	// ext3/4 journal that needs recovery).
	ErrDirty = errors.New("the volume was not shut down cleanly")
	// ErrBitLocker: the volume is BitLocker-encrypted; its bitmaps cannot
	// be read.
	ErrBitLocker = errors.New("the volume is encrypted with BitLocker")
	// ErrCorrupt: the filesystem is recognised but its metadata does not
	// add up.
	ErrCorrupt = errors.New("the filesystem's metadata is damaged")
)

// Extent is a byte range of the partition: [Off, Off+Len).
type Extent struct {
	Off int64
	Len int64
}

// End is the offset one past the extent's last byte.
func (e Extent) End() int64 { return e.Off + e.Len }

// Map says which bytes of a partition its filesystem uses.
type Map struct {
	Kind      string   // Ext4, FAT32, NTFS, Swap, Unknown ...
	BlockSize int64    // the filesystem's allocation unit in bytes (block, cluster); 512 for Unknown
	Size      int64    // the partition's size in bytes
	Extents   []Extent // sorted, merged (no two touch), inside [0, Size)
}

// Used is the number of bytes the extents cover.
func (m Map) Used() int64 {
	var n int64
	for _, e := range m.Extents {
		n += e.Len
	}
	return n
}

// String is a one-line summary for logs and consoles, such as
// "ext4: 38.2GiB used of 256GiB, 1,204 extents".
func (m Map) String() string {
	return fmt.Sprintf("%s: %s used of %s, %s extents", m.Kind,
		bytesize.Format(m.Used()), bytesize.Format(m.Size), thousands(len(m.Extents)))
}

func thousands(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Contains reports whether every byte of [off, off+n) is inside the map.
func (m Map) Contains(off, n int64) bool {
	if n <= 0 {
		return true
	}
	i, _ := slices.BinarySearchFunc(m.Extents, off, func(e Extent, off int64) int {
		switch {
		case e.End() <= off:
			return -1
		case e.Off > off:
			return 1
		}
		return 0
	})
	return i < len(m.Extents) && m.Extents[i].Off <= off && off+n <= m.Extents[i].End()
}

// Merge returns exts sorted and merged (overlapping or touching extents
// become one, empty ones are dropped) and, if more than max remain
// (max > 0), joins neighbours across the smallest gaps first until max
// remain. The result covers every byte exts covered, plus the joined
// gaps. exts is reordered in place.
func Merge(exts []Extent, max int) []Extent {
	slices.SortFunc(exts, func(a, b Extent) int {
		switch {
		case a.Off < b.Off:
			return -1
		case a.Off > b.Off:
			return 1
		}
		return 0
	})
	out := exts[:0]
	for _, e := range exts {
		if e.Len <= 0 {
			continue
		}
		if n := len(out); n > 0 && e.Off <= out[n-1].End() {
			if e.End() > out[n-1].End() {
				out[n-1].Len = e.End() - out[n-1].Off
			}
			continue
		}
		out = append(out, e)
	}
	if max <= 0 || len(out) <= max {
		return out
	}
	// Join len(out)-max gaps: every gap below the threshold, then gaps
	// equal to it, left to right, until enough are joined.
	gaps := make([]int64, len(out)-1)
	for i := range gaps {
		gaps[i] = out[i+1].Off - out[i].End()
	}
	join := len(out) - max
	sorted := slices.Clone(gaps)
	slices.Sort(sorted)
	threshold := sorted[join-1]
	below := 0
	for _, g := range gaps {
		if g < threshold {
			below++
		}
	}
	equal := join - below // gaps equal to threshold to join
	merged := out[:1]
	for i, g := range gaps {
		next := out[i+1]
		if g < threshold || (g == threshold && equal > 0) {
			if g == threshold {
				equal--
			}
			merged[len(merged)-1].Len = next.End() - merged[len(merged)-1].Off
			continue
		}
		merged = append(merged, next)
	}
	return merged
}

// Capped returns m with at most max extents (see [Merge]).
func (m Map) Capped(max int) Map {
	m.Extents = Merge(slices.Clone(m.Extents), max)
	return m
}

// builder collects extents in any order, inside [0, size), and merges
// whenever it holds too many, so memory stays bounded.
type builder struct {
	size int64
	exts []Extent
}

func (b *builder) add(off, n int64) {
	if off < 0 {
		n += off
		off = 0
	}
	if off >= b.size || n <= 0 {
		return
	}
	if n > b.size-off {
		n = b.size - off
	}
	if k := len(b.exts); k > 0 && b.exts[k-1].End() == off {
		b.exts[k-1].Len += n
		return
	}
	b.exts = append(b.exts, Extent{off, n})
	if len(b.exts) >= 2*MaxExtents {
		b.exts = Merge(b.exts, MaxExtents)
	}
}

func (b *builder) done(kind string, unit int64) Map {
	return Map{Kind: kind, BlockSize: unit, Size: b.size, Extents: Merge(b.exts, MaxExtents)}
}

// readAt reads len(p) bytes at off, failing (as corrupt) past size.
func readAt(r io.ReaderAt, size int64, p []byte, off int64) error {
	if off < 0 || off > size || int64(len(p)) > size-off {
		return fmt.Errorf("%w: it points at %d bytes at offset %d, past the partition's end (%d bytes)", ErrCorrupt, len(p), off, size)
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at offset %d: %w", len(p), off, err)
}
