package imager

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/anacrolix/torrent/bencode"
)

// memRW is a ReadWriterAt over a byte slice.
type memRW []byte

func (m memRW) ReadAt(b []byte, off int64) (int, error) { return copy(b, m[off:]), nil }
func (m memRW) WriteAt(b []byte, off int64) (int, error) {
	return copy(m[off:], b), nil
}

// TestOnExtents: reads and writes through the mapping land exactly on
// the extents, in order, for every offset and length, and never touch a
// gap.
func TestOnExtents(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		size := int64(1 + rng.IntN(4096))
		var es Extents
		for at := int64(rng.IntN(8)); at < size; {
			n := min(int64(1+rng.IntN(300)), size-at)
			es = append(es, Extent{at, n})
			at += n + int64(1+rng.IntN(300))
		}
		if len(es) == 0 {
			continue
		}
		disk := make(memRW, size)
		for i := range disk {
			disk[i] = 0xee
		}
		// The model: the packed bytes are the extents' bytes in order.
		var where []int64
		for _, e := range es {
			for o := e.Off; o < e.End(); o++ {
				where = append(where, o)
			}
		}
		m := OnExtents(disk, es)
		packed := make([]byte, len(where))
		for i := range packed {
			packed[i] = byte(rng.Uint32())
		}
		for off := 0; off < len(packed); {
			n := min(1+rng.IntN(200), len(packed)-off)
			if _, err := m.WriteAt(packed[off:off+n], int64(off)); err != nil {
				t.Fatalf("round %d: write %d+%d: %v", round, off, n, err)
			}
			off += n
		}
		want := bytes.Repeat([]byte{0xee}, int(size))
		for i, o := range where {
			want[o] = packed[i]
		}
		if !bytes.Equal(disk, want) {
			t.Fatalf("round %d: the disk after writing through %v differs from the model", round, es)
		}
		off := rng.IntN(len(packed))
		n := rng.IntN(len(packed) - off + 1)
		got := make([]byte, n)
		if _, err := m.ReadAt(got, int64(off)); err != nil {
			t.Fatalf("round %d: read %d+%d: %v", round, off, n, err)
		}
		if !bytes.Equal(got, packed[off:off+n]) {
			t.Fatalf("round %d: read %d+%d differs", round, off, n)
		}
		if _, err := m.ReadAt(make([]byte, 1), int64(len(packed))); err == nil {
			t.Fatalf("round %d: a read past the extents succeeded", round)
		}
	}
}

// TestExtentsBencode: extents survive the info dictionary's encoding,
// and Parse refuses extents that overlap, leave the partition or do not
// add up to the file.
func TestExtentsBencode(t *testing.T) {
	es := Extents{{0, 4096}, {1 << 20, 8192}, {1 << 40, 1}}
	b, err := bencode.Marshal(es)
	if err != nil {
		t.Fatal(err)
	}
	var back Extents
	if err := bencode.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != len(es) || back[2] != es[2] {
		t.Fatalf("round trip: %v, want %v", back, es)
	}
	for _, tc := range []struct {
		es      Extents
		size, n int64
		ok      bool
	}{
		{Extents{{0, 10}, {20, 10}}, 100, 20, true},
		{Extents{{0, 10}, {5, 10}}, 100, 20, false},  // overlap
		{Extents{{20, 10}, {0, 10}}, 100, 20, false}, // order
		{Extents{{0, 10}, {95, 10}}, 100, 20, false}, // past the end
		{Extents{{0, 10}, {20, 10}}, 100, 21, false}, // sum
		{Extents{{0, 0}}, 100, 0, false},             // empty
		{Extents{{-5, 10}}, 100, 10, false},          // negative
		{Extents{{1 << 62, 1 << 62}}, 100, 0, false}, // overflow
	} {
		if err := tc.es.check(tc.size, tc.n); (err == nil) != tc.ok {
			t.Errorf("check(%v, %d, %d) = %v, want ok=%v", tc.es, tc.size, tc.n, err, tc.ok)
		}
	}
}
