package initramfs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// TestReadESPFileSizes: files the stick's ESP carries read back exactly, at
// sizes around cluster and sector boundaries. go-diskfs returns bytes past
// a file's end when a read starts inside a cluster, and the whole-file
// read with a growing buffer did that: a used-block torrent (2047, 4095
// bytes here; 17 stray bytes on the QEMU stick) came back damaged.
func TestReadESPFileSizes(t *testing.T) {
	needs.Tool(t, "mkfs.vfat", "mcopy")
	dir := t.TempDir()
	esp := filepath.Join(dir, "esp.img")
	if out, err := exec.Command("mkfs.vfat", "-F", "32", "-C", esp, "65536").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat: %v\n%s", err, out)
	}
	sizes := []int{1, 511, 512, 513, 2047, 2048, 2049, 4095, 4096, 4097, 10000}
	for _, n := range sizes {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + n)
		}
		src := filepath.Join(dir, fmt.Sprint(n))
		if err := os.WriteFile(src, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mcopy", "-i", esp, src, fmt.Sprintf("::/f%d", n)).CombinedOutput(); err != nil {
			t.Fatalf("mcopy: %v\n%s", err, out)
		}
	}
	for _, n := range sizes {
		want, _ := os.ReadFile(filepath.Join(dir, fmt.Sprint(n)))
		got, err := readESPFile(esp, fmt.Sprintf("/f%d", n), 1<<20)
		if err != nil {
			t.Errorf("%d-byte file: %v", n, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%d-byte file read back as %d bytes (equal prefix: %v)", n, len(got), bytes.HasPrefix(got, want))
		}
	}
	if _, err := readESPFile(esp, "/f10000", 9999); err == nil {
		t.Errorf("a file over the limit was read")
	}
}
