package usedmap

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func detectFile(t *testing.T, path string) Map {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := Detect(f, fi.Size())
	if err != nil {
		t.Fatalf("Detect(%s) = %v", filepath.Base(path), err)
	}
	checkShape(t, m)
	t.Logf("%s", m)
	return m
}

// checkShape checks the invariants every map keeps.
func checkShape(t testing.TB, m Map) {
	t.Helper()
	var prev int64 = -1
	for i, e := range m.Extents {
		if e.Len <= 0 || e.Off <= prev || e.End() > m.Size {
			t.Fatalf("%s: extent %d = %+v after end %d, size %d: not sorted, merged and inside", m.Kind, i, e, prev, m.Size)
		}
		prev = e.End()
	}
	if len(m.Extents) > MaxExtents {
		t.Fatalf("%s: %d extents, more than MaxExtents", m.Kind, len(m.Extents))
	}
}

// usedOnly copies only the map's extents of src into a new sparse file of
// the same size: everything outside the map reads as zeros.
func usedOnly(t *testing.T, src string, m Map) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), "used-only-"+filepath.Base(src))
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(m.Size); err != nil {
		t.Fatal(err)
	}
	for _, e := range m.Extents {
		if _, err := io.Copy(io.NewOffsetWriter(out, e.Off), io.NewSectionReader(in, e.Off, e.Len)); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// bitset is a set of allocation units, for cross-checks.
type bitset []bool

// unitsOf returns which of n units of size unit (from base) the map
// covers fully, and fails if it covers any only in part.
func unitsOf(t *testing.T, m Map, base, unit, n int64) bitset {
	t.Helper()
	s := make(bitset, n)
	for i := range n {
		off := base + i*unit
		s[i] = m.Contains(off, unit)
		if !s[i] && (m.Contains(off, 1) || m.Contains(off+unit-1, 1)) {
			t.Fatalf("%s: unit %d (offset %d) is partly in the map", m.Kind, i, off)
		}
	}
	return s
}

func (s bitset) count() int {
	n := 0
	for _, b := range s {
		if b {
			n++
		}
	}
	return n
}

// diff lists (at most 10) units where two sets disagree.
func (s bitset) diff(o bitset) string {
	var b strings.Builder
	k := 0
	for i := range s {
		if s[i] != o[i] {
			if k++; k > 10 {
				b.WriteString(" ...")
				break
			}
			fmt.Fprintf(&b, " %d(ours %v)", i, s[i])
		}
	}
	return b.String()
}
