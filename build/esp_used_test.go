package build

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pxeswarm/pxeswarm/usedmap"
)

// TestESPUsedBlocks: the test OS's ESP, a FAT32 that writeESP makes, is
// one usedmap reads, so the QEMU classroom deploys a used-block image
// (its ESP's free space is not shipped) and boots it.
func TestESPUsedBlocks(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "kernel")
	if err := os.WriteFile(host, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	esp := filepath.Join(dir, "esp.img")
	if err := writeESP(esp, 40<<20, map[string]string{"/EFI/BOOT/BOOTX64.EFI": host}, map[string]string{"/marker.txt": "hello"}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(esp)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := usedmap.Detect(f, 40<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(m)
	if m.Kind != usedmap.FAT32 || m.Used() < 3<<20 || m.Used() > 8<<20 {
		t.Errorf("ESP maps as %v, want fat32 with the 3 MiB file and the FAT's metadata, well under the 40 MiB partition", m)
	}
}
