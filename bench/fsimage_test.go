package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// fsBenchImage makes a 256 MiB image of kind, 15% used, as the bench does.
func fsBenchImage(t *testing.T, kind string) *benchImage {
	t.Helper()
	needs.Tool(t, "mke2fs", "debugfs", "e2fsck", "mkntfs", "ntfscp", "ntfsls", "ntfstruncate", "ntfsfix")
	dir := t.TempDir()
	img := &benchImage{path: filepath.Join(dir, kind+".img"), size: 256 << 20, fs: kind}
	m, err := makeFSImage(dir, img.path, kind, img.size, 15)
	if err != nil {
		t.Fatalf("makeFSImage(%s) = %v", kind, err)
	}
	img.used, img.usedExts = m.Used(), m.Extents
	if img.sha1, err = fileSHA1(img.path); err != nil {
		t.Fatal(err)
	}
	if img.usedSHA1, err = usedSHA1(img.path, img.usedExts); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestFSImage checks the bench's filesystem images: about the share used
// that was asked for, free space in many pieces (files deleted between
// kept ones), and a filesystem its own checker passes (makeFSImage runs
// e2fsck -fn and ntfsfix -n).
func TestFSImage(t *testing.T) {
	for _, kind := range []string{"ext4", "ntfs"} {
		t.Run(kind, func(t *testing.T) {
			img := fsBenchImage(t, kind)
			pct := 100 * float64(img.used) / float64(img.size)
			if pct < 13 || pct > 17 {
				t.Errorf("makeFSImage(%s, 15%%) uses %.1f%%, want 13–17%%", kind, pct)
			}
			if n := len(img.usedExts); n < 5 {
				t.Errorf("makeFSImage(%s) used map has %d extents, want ≥ 5 (fragmented free space)", kind, n)
			}
			if kind == "ext4" {
				out, _ := exec.Command("e2fsck", "-fn", img.path).CombinedOutput()
				if strings.Contains(string(out), "(0.0% non-contiguous)") {
					t.Errorf("e2fsck -fn %s: no file is fragmented: %s", img.path, out)
				}
			}
		})
	}
}

// copyUsed writes the used extents of img into a fresh sparse file of its
// size, as pxeswarm writes a used-block image onto a new target.
func copyUsed(t *testing.T, img *benchImage) string {
	t.Helper()
	src, err := os.Open(img.path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(t.TempDir(), "copy.img")
	dst, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Truncate(img.size); err != nil {
		t.Fatal(err)
	}
	for _, e := range img.usedExts {
		if _, err := io.Copy(io.NewOffsetWriter(dst, e.Off), io.NewSectionReader(src, e.Off, e.Len)); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func poke(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// firstGap is the first byte outside the used map.
func firstGap(img *benchImage) int64 {
	var at int64
	for _, e := range img.usedExts {
		if e.Off > at {
			return at
		}
		at = e.End()
	}
	return at
}

// TestVerify checks how the bench verifies clients' copies: a copy of the
// used blocks passes for a used-block method and fails for a raw one; a
// byte changed in a used block fails, one in free space does not; on NTFS
// a copy without the backup boot sector (what partclone.ntfs leaves)
// passes with a note, and any other difference fails.
func TestVerify(t *testing.T) {
	ext := fsBenchImage(t, "ext4")
	used := copyUsed(t, ext)
	if ok, note := verify(ext, pxeswarmMethod{}, used); !ok || note != "" {
		t.Errorf("verify(ext4, pxeswarm, copy of the used blocks) = %v, %q; want true, \"\"", ok, note)
	}
	if ok, _ := verify(ext, httpMethod{}, used); ok {
		t.Errorf("verify(ext4, http, copy of the used blocks only) = true; want false: a raw method must deliver every byte (the free space holds deleted files)")
	}
	poke(t, used, firstGap(ext))
	if ok, note := verify(ext, clonezillaMethod{}, used); !ok {
		t.Errorf("verify(ext4, clonezilla, copy changed in free space) = false, %q; want true", note)
	}
	last := ext.usedExts[len(ext.usedExts)-1]
	bad := last.Off + last.Len/2
	poke(t, used, bad)
	ok, note := verify(ext, clonezillaMethod{}, used)
	if want := fmt.Sprintf("bytes %d+512", bad&^511); ok || !strings.Contains(note, want) {
		t.Errorf("verify(ext4, clonezilla, copy changed at %d) = %v, %q; want false, naming %q", bad, ok, note, want)
	}
	if ok, _ := verify(ext, httpMethod{}, ext.path); !ok {
		t.Errorf("verify(ext4, http, the image itself) = false; want true")
	}

	ntfs := fsBenchImage(t, "ntfs")
	noBackup := copyUsed(t, ntfs)
	poke(t, noBackup, ntfs.size-100)
	if ok, note := verify(ntfs, clonezillaMethod{}, noBackup); !ok || !strings.Contains(note, "backup boot sector") {
		t.Errorf("verify(ntfs, clonezilla, copy without the backup boot sector) = %v, %q; want true, noting it", ok, note)
	}
	poke(t, noBackup, ntfs.usedExts[0].Off+4096)
	if ok, note := verify(ntfs, clonezillaMethod{}, noBackup); ok {
		t.Errorf("verify(ntfs, clonezilla, copy that also differs at %d) = true, %q; want false", ntfs.usedExts[0].Off+4096, note)
	}
}
