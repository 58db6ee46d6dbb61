package usedmap

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// run runs a command and returns its combined output; it fails t on a
// non-zero exit.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// garbage makes a file of size bytes of random data, so that whatever a
// filesystem leaves unused is not zero and a used map that misses a
// block shows.
func garbage(t *testing.T, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{7})
	if _, err := io.CopyN(f, rng, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// testFiles writes files of varied sizes (random content) into a new
// folder, with a subfolder, and returns the folder and the files'
// relative paths.
func testFiles(t *testing.T, n int, maxSize int) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(maxSize)))
	var names []string
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("f%02d.bin", i)
		if i%3 == 2 {
			name = "sub/" + name
		}
		size := rng.IntN(maxSize)
		if i%5 == 0 {
			size = rng.IntN(100) // tiny files (inline data, resident NTFS data)
		}
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return dir, names
}

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

// sameFile fails t unless got's bytes equal the file at want.
func sameFile(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	w, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, w) {
		t.Errorf("%s: read back %d bytes that differ from the %d written", what, len(got), len(w))
	}
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
