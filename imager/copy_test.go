package imager

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
)

// memPart is an image part in memory that counts its writes.
type memPart struct {
	b      []byte
	writes int
}

func (m *memPart) ReadAt(p []byte, off int64) (int, error) { return copy(p, m.b[off:]), nil }
func (m *memPart) WriteAt(p []byte, off int64) (int, error) {
	m.writes++
	return copy(m.b[off:], p), nil
}

// TestCopy: an image of two parts (the second not a whole number of
// pieces) is copied to blank targets byte for byte; a source with one
// flipped byte stops the copy at that piece
// with ErrBadSource and writes none of it.
func TestCopy(t *testing.T) {
	dir := t.TempDir()
	im, srcs := makeImage(t, dir, []int64{3 * MinPieceLength, 2*MinPieceLength + 1234}, MinPieceLength)
	var from []Part
	var want [][]byte
	for _, s := range srcs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, b)
		from = append(from, Part{RW: &memPart{b: bytes.Clone(b)}, Length: int64(len(b))})
	}
	blank := func() ([]Part, []*memPart) {
		var ps []Part
		var ms []*memPart
		for _, b := range want {
			m := &memPart{b: make([]byte, len(b))}
			ps, ms = append(ps, Part{RW: m, Length: int64(len(b))}), append(ms, m)
		}
		return ps, ms
	}
	to, mems := blank()
	var last Progress
	err := CopyConfig{Image: im, From: from, To: to, Progress: func(p Progress) { last = p }}.Run(context.Background())
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	for i, m := range mems {
		if !bytes.Equal(m.b, want[i]) {
			t.Errorf("part %d differs after the copy", i)
		}
	}
	if last.State != StateCopying || last.Done != im.Length || last.Total != im.Length {
		t.Errorf("last progress = %+v, want copying %d/%d", last, im.Length, im.Length)
	}

	// Damage piece 3 (the first of part 2) on the source.
	from[1].RW.(*memPart).b[100] ^= 1
	to, mems = blank()
	err = CopyConfig{Image: im, From: from, To: to}.Run(context.Background())
	if !errors.Is(err, ErrBadSource) {
		t.Fatalf("Copy from a damaged source = %v, want ErrBadSource", err)
	}
	if mems[1].writes != 0 || mems[0].writes != 3 {
		t.Errorf("Copy from a damaged source wrote %d pieces to part 0 and %d to part 1, want 3 and 0", mems[0].writes, mems[1].writes)
	}

	// Parts that do not match the image are refused before anything is read.
	if err := (CopyConfig{Image: im, From: from[:1], To: to}).Run(context.Background()); !errors.Is(err, ErrTargets) {
		t.Errorf("Copy with one source part = %v, want ErrTargets", err)
	}
}
