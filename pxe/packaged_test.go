package pxe

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

// TestUsePackagedBoot: the package's boot files are served only when the
// site left kernel and initramfs at their defaults, <state_dir>/boot has
// no kernel, and the package's folder has both files.
func TestUsePackagedBoot(t *testing.T) {
	write := func(path string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name             string
		ownKernel        bool // <state_dir>/boot/vmlinuz exists
		pkgKernel, pkgRD bool // the package's files exist
		configured       bool // http.kernel set in the config
		want             bool
	}{
		{name: "package only", pkgKernel: true, pkgRD: true, want: true},
		{name: "own build wins", ownKernel: true, pkgKernel: true, pkgRD: true},
		{name: "configured path wins", configured: true, pkgKernel: true, pkgRD: true},
		{name: "package lacks initramfs", pkgKernel: true},
		{name: "no package"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pkg := filepath.Join(dir, "pkg")
			s := &Site{StateDir: filepath.Join(dir, "state")}
			if tc.configured {
				s.HTTP.Kernel = filepath.Join(dir, "custom", "vmlinuz")
			}
			s.ApplyDefaults()
			if tc.ownKernel {
				write(filepath.Join(s.StateDir, "boot", "vmlinuz"))
			}
			if tc.pkgKernel {
				write(filepath.Join(pkg, "vmlinuz"))
			}
			if tc.pkgRD {
				write(filepath.Join(pkg, "initramfs"))
			}
			if got := s.usePackagedBoot(pkg); got != tc.want {
				t.Errorf("usePackagedBoot(%s) = %v, want %v", pkg, got, tc.want)
			}
		})
	}
}

// TestKeyArchive: the archive is newc, holds the key where the agent
// reads it, and is padded to 512 bytes.
func TestKeyArchive(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := KeyArchive(pub)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%512 != 0 {
		t.Errorf("KeyArchive is %d bytes, want a multiple of 512", len(b))
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("KeyArchive does not read as newc: %v", err)
	}
	var names []string
	for _, r := range recs {
		names = append(names, r.Name)
		if r.Name == KeyInitramfsPath {
			data, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if want := base64.StdEncoding.EncodeToString(pub) + "\n"; string(data) != want {
				t.Errorf("%s = %q, want %q", r.Name, data, want)
			}
		}
	}
	if want := []string{"etc", "etc/pxeswarm", KeyInitramfsPath}; !slices.Equal(names, want) {
		t.Errorf("KeyArchive entries = %q, want %q", names, want)
	}
}

// TestAppendedFile: every window of the joined reader equals the same
// window of file + zero padding + tail, for file sizes of every residue
// mod 4.
func TestAppendedFile(t *testing.T) {
	tail := []byte("TAIL-ARCHIVE")
	for size := 0; size <= 9; size++ {
		file := bytes.Repeat([]byte{0xAB}, size)
		pad := (4 - size%4) % 4
		want := append(append(append([]byte(nil), file...), make([]byte, pad)...), tail...)
		a := appendedFile{f: bytes.NewReader(file), size: int64(size), tail: tail}
		if a.len() != int64(len(want)) {
			t.Fatalf("size %d: len() = %d, want %d", size, a.len(), len(want))
		}
		if (size+pad)%4 != 0 {
			t.Fatalf("size %d: tail at %d, not 4-aligned", size, size+pad)
		}
		for off := 0; off <= len(want); off++ {
			for n := 0; off+n <= len(want)+2; n++ {
				buf := make([]byte, n)
				got, err := a.ReadAt(buf, int64(off))
				end := min(off+n, len(want))
				if got != end-off || !bytes.Equal(buf[:got], want[off:end]) {
					t.Fatalf("size %d: ReadAt(%d bytes, %d) = %d %q, want %q", size, n, off, got, buf[:got], want[off:end])
				}
				if off+n > len(want) && err != io.EOF {
					t.Fatalf("size %d: ReadAt(%d bytes, %d) past the end: err %v, want EOF", size, n, off, err)
				}
				if off+n <= len(want) && err != nil {
					t.Fatalf("size %d: ReadAt(%d bytes, %d): %v", size, n, off, err)
				}
			}
		}
	}
}
