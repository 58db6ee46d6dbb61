package usedmap

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// sparseImage is a fuzz input that stands for a large, mostly-zero
// partition: data is a series of chunks, each a 4-byte little-endian
// offset, a 2-byte length and that many bytes, laid over zeros (later
// chunks over earlier ones). Real filesystems become small seeds this
// way, and the fuzzer can move metadata anywhere.
type sparseImage struct {
	chunks []sparseChunk
	size   int64
}

type sparseChunk struct {
	off  int64
	data []byte
}

func parseSparse(data []byte, extra uint32) sparseImage {
	var img sparseImage
	for len(data) >= 6 {
		off := int64(binary.LittleEndian.Uint32(data))
		n := min(int(binary.LittleEndian.Uint16(data[4:])), len(data)-6)
		img.chunks = append(img.chunks, sparseChunk{off, data[6 : 6+n]})
		img.size = max(img.size, off+int64(n))
		data = data[6+n:]
	}
	img.size += int64(extra % (64 << 20))
	return img
}

func (s sparseImage) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	m := min(int64(len(p)), s.size-off)
	clear(p[:m])
	for _, c := range s.chunks {
		lo, hi := max(off, c.off), min(off+m, c.off+int64(len(c.data)))
		if lo < hi {
			copy(p[lo-off:hi-off], c.data[lo-c.off:hi-c.off])
		}
	}
	if m < int64(len(p)) {
		return int(m), io.EOF
	}
	return int(m), nil
}

// seed makes a small real filesystem with the given command (the image
// path is appended) and adds it as a sparse seed: its non-zero sectors.
// Without the tool there is no seed.
func seed(f *testing.F, size int64, name string, args ...string) {
	img := filepath.Join(f.TempDir(), "seed.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		f.Fatal(err)
	}
	if out, err := exec.Command(name, append(args, img)...).CombinedOutput(); err != nil {
		f.Logf("no %s seed: %v %s", name, err, out)
		return
	}
	b, err := os.ReadFile(img)
	if err != nil {
		f.Fatal(err)
	}
	var enc []byte
	zero := make([]byte, 512)
	for off := 0; off < len(b); off += 512 {
		end := off
		for end < len(b) && end-off < 60<<10 && !bytes.Equal(b[end:end+512], zero) {
			end += 512
		}
		if end > off {
			enc = binary.LittleEndian.AppendUint32(enc, uint32(off))
			enc = binary.LittleEndian.AppendUint16(enc, uint16(end-off))
			enc = append(enc, b[off:end]...)
			off = end - 512
		}
	}
	extra := uint32(size - parseSparse(enc, 0).size)
	// The seed must be a real map, so the fuzzer starts on the paths
	// that succeed.
	sp := parseSparse(enc, extra)
	if m, err := Detect(sp, sp.size); err != nil || m.Kind == Unknown {
		f.Fatalf("seed from %s: Detect = %v, %v", name, m, err)
	}
	f.Add(enc, extra)
}

// fuzzMap runs parse on a sparse image and checks that it errs or
// returns a well-formed map. A panic, a hang or a huge allocation fails
// the fuzzer.
func fuzzMap(f *testing.F, parse func(io.ReaderAt, int64) (Map, error)) {
	f.Fuzz(func(t *testing.T, data []byte, extra uint32) {
		img := parseSparse(data, extra)
		m, err := parse(img, img.size)
		if err != nil {
			return
		}
		if m.Size != img.size || m.Kind == "" {
			t.Fatalf("map of %d bytes says size %d, kind %q", img.size, m.Size, m.Kind)
		}
		checkShape(t, m)
	})
}

func FuzzExt(f *testing.F) {
	seed(f, 1<<20, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-O", "^has_journal", "-N", "64")
	seed(f, 1<<20, "mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-g", "256", "-N", "64", "-O", "meta_bg,^resize_inode")
	seed(f, 2<<20, "mke2fs", "-q", "-F", "-t", "ext4", "-O", "bigalloc,^has_journal", "-C", "16384", "-N", "64")
	fuzzMap(f, extMap)
}

func FuzzFAT(f *testing.F) {
	seed(f, 256<<10, "mkfs.vfat", "-F", "12")
	seed(f, 8<<20, "mkfs.vfat", "-F", "16", "-s", "1")
	seed(f, 34<<20, "mkfs.vfat", "-F", "32", "-s", "1")
	fuzzMap(f, fatMap)
}

func FuzzNTFS(f *testing.F) {
	seed(f, 2<<20, "mkntfs", "-F", "-Q", "-q")
	seed(f, 2<<20, "mkntfs", "-F", "-Q", "-q", "-c", "512")
	fuzzMap(f, ntfsMap)
}

// FuzzDetect covers recognition (and the swap header): any input is a
// map or an error.
func FuzzDetect(f *testing.F) {
	seed(f, 64<<10, "mkswap")
	seed(f, 256<<10, "mkfs.vfat", "-F", "12")
	f.Add([]byte("\xeb\x52\x90-FVE-FS-"), uint32(1<<20))
	fuzzMap(f, Detect)
}
