package imager

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/anacrolix/torrent/bencode"
)

// Used-block images. A part whose filesystem pxeswarm can read carries
// only the bytes that filesystem uses: its torrent file is those byte
// ranges (extents) of the partition packed one after another, and the
// part's layout entry lists the extents, so the info-hash covers where
// every byte goes. Everything that reads or writes a part (sessions,
// seeders, copies, read-back) does so through OnExtents, which maps the
// packed offsets to the partition's own; what lies between the extents is
// the partition's gaps, which PartInfo.Gaps says how to treat.

// MaxExtents bounds the extents of one part, so a torrent's layout stays
// small (16 bytes an extent: 1 MiB at the bound) and the mapping cheap.
// Whoever makes a layout merges across the smallest gaps to stay under it.
const MaxExtents = 1 << 16

// GapsFree is how a used-block part's gaps (the bytes between its
// extents) are treated on a target: they are the filesystem's free space,
// free by the bitmaps the image carries, so the target's old bytes there
// are never read and are left alone. An agent refuses a kind it does not
// know.
const GapsFree = "free"

// GapsZero is how the gaps of a part made by zero detection are treated:
// the source held zeros there (a filesystem pxeswarm does not read, or
// none), so a target must read zeros there after a deploy: the agent
// zeroes them (BLKZEROOUT on a block device, a punched hole in a file).
const GapsZero = "zero"

// Extent is a byte range of a partition: [Off, Off+Len).
type Extent struct {
	Off int64
	Len int64
}

// End is the offset one past the extent's last byte.
func (e Extent) End() int64 { return e.Off + e.Len }

// Extents is a part's extents, sorted and apart. In the info dictionary
// they are one bencoded string of 16-byte big-endian (offset, length)
// pairs.
type Extents []Extent

// MarshalBencode implements bencode.Marshaler.
func (es Extents) MarshalBencode() ([]byte, error) {
	b := make([]byte, 16*len(es))
	for i, e := range es {
		binary.BigEndian.PutUint64(b[16*i:], uint64(e.Off))
		binary.BigEndian.PutUint64(b[16*i+8:], uint64(e.Len))
	}
	return bencode.Marshal(b)
}

// UnmarshalBencode implements bencode.Unmarshaler. It checks only the
// encoding; [Extents.check] checks the ranges.
func (es *Extents) UnmarshalBencode(data []byte) error {
	var b []byte
	if err := bencode.Unmarshal(data, &b); err != nil {
		return fmt.Errorf("extents: %w", err)
	}
	if len(b)%16 != 0 || len(b)/16 > MaxExtents {
		return fmt.Errorf("extents: %d bytes, want 16 per extent and at most %d extents", len(b), MaxExtents)
	}
	out := make(Extents, len(b)/16)
	for i := range out {
		out[i] = Extent{Off: int64(binary.BigEndian.Uint64(b[16*i:])), Len: int64(binary.BigEndian.Uint64(b[16*i+8:]))}
	}
	*es = out
	return nil
}

// Total is the bytes the extents cover.
func (es Extents) Total() int64 {
	var n int64
	for _, e := range es {
		n += e.Len
	}
	return n
}

// check says whether es are sorted, apart, non-empty ranges inside a
// partition of size bytes that together hold length bytes.
func (es Extents) check(size, length int64) error {
	if len(es) > MaxExtents {
		return fmt.Errorf("%d extents, at most %d", len(es), MaxExtents)
	}
	var end, total int64
	for i, e := range es {
		if e.Len <= 0 || e.Off < end || e.Off > size || e.Len > size-e.Off {
			return fmt.Errorf("extent %d (%d+%d) is empty, out of order or outside the %d-byte partition", i, e.Off, e.Len, size)
		}
		end = e.End()
		total += e.Len
	}
	if total != length {
		return fmt.Errorf("extents hold %d bytes for a %d-byte file", total, length)
	}
	return nil
}

// Gaps returns the ranges of a partition of size bytes that es leave out.
func (es Extents) Gaps(size int64) []Extent {
	var out []Extent
	var at int64
	for _, e := range es {
		if e.Off > at {
			out = append(out, Extent{Off: at, Len: e.Off - at})
		}
		at = e.End()
	}
	if at < size {
		out = append(out, Extent{Off: at, Len: size - at})
	}
	return out
}

// OnExtents returns rw seen through es: offset 0 is the first byte of
// the first extent, and the extents follow one another, as in the
// torrent. With no extents it returns rw itself. Sync and DropCache pass
// through to rw when it has them.
func OnExtents(rw ReadWriterAt, es Extents) ReadWriterAt {
	if len(es) == 0 {
		return rw
	}
	m := &mapped{rw: rw, es: es, starts: make([]int64, len(es))}
	var at int64
	for i, e := range es {
		m.starts[i] = at
		at += e.Len
	}
	m.length = at
	return m
}

type mapped struct {
	rw     ReadWriterAt
	es     Extents
	starts []int64 // starts[i]: the packed offset of es[i]
	length int64
}

// each calls f for every extent piece of the packed range [off, off+n),
// with its partition offset and the bounds [lo, hi) within the caller's
// buffer.
func (m *mapped) each(off int64, n int, f func(at int64, lo, hi int) (int, error)) (int, error) {
	if off < 0 || off > m.length {
		return 0, fmt.Errorf("offset %d outside the %d bytes the extents hold", off, m.length)
	}
	i := sort.Search(len(m.starts), func(i int) bool { return m.starts[i]+m.es[i].Len > off }) // first extent ending past off
	done := 0
	for ; i < len(m.es) && done < n; i++ {
		cur := off + int64(done)
		in := cur - m.starts[i]
		want := int(min(int64(n-done), m.es[i].Len-in))
		got, err := f(m.es[i].Off+in, done, done+want)
		done += got
		if err != nil {
			return done, err
		}
		if got < want {
			return done, io.ErrUnexpectedEOF
		}
	}
	if done < n {
		return done, io.EOF
	}
	return done, nil
}

func (m *mapped) ReadAt(b []byte, off int64) (int, error) {
	return m.each(off, len(b), func(at int64, lo, hi int) (int, error) {
		n, err := m.rw.ReadAt(b[lo:hi], at)
		if errors.Is(err, io.EOF) && n == hi-lo {
			err = nil
		}
		return n, err
	})
}

func (m *mapped) WriteAt(b []byte, off int64) (int, error) {
	return m.each(off, len(b), func(at int64, lo, hi int) (int, error) {
		n, err := m.rw.WriteAt(b[lo:hi], at)
		if err != nil {
			err = fmt.Errorf("partition byte %d: %w", at+int64(n), err)
		}
		return n, err
	})
}

// Sync flushes rw if it can.
func (m *mapped) Sync() error {
	if s, ok := m.rw.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}

// DropCache drops rw's cached pages if it can.
func (m *mapped) DropCache() error {
	if d, ok := m.rw.(interface{ DropCache() error }); ok {
		return d.DropCache()
	}
	return nil
}

// ExtentsOf converts [offset, length] pairs (a capture manifest's form)
// to Extents; nil for none.
func ExtentsOf(pairs [][2]int64) Extents {
	if len(pairs) == 0 {
		return nil
	}
	out := make(Extents, len(pairs))
	for i, e := range pairs {
		out[i] = Extent{Off: e[0], Len: e[1]}
	}
	return out
}
