package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// TestTestOSBootsUnderOVMF lays the test OS onto a disk file the way the
// agent does (table from the image layout, each part at its partition) and
// boots it with OVMF: it must print the new-system marker with its digest.
func TestTestOSBootsUnderOVMF(t *testing.T) {
	needs.Tool(t, "qemu-system-x86_64", qemu.OVMF, "/boot/vmlinuz-*")
	ctx := context.Background()
	log := testlog.New(t)
	dir := t.TempDir()
	tos, err := TestOSConfig{Dir: dir}.Build(ctx, log)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	if err := tos.WriteDisk(disk, 128<<20); err != nil {
		t.Fatal(err)
	}
	vm, err := qemu.Config{Name: "testos", Firmware: qemu.UEFI, Disks: []qemu.Disk{{Path: disk}}, Timeout: 3 * time.Minute}.Boot(ctx, log)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	if _, err := vm.Expect(NewSystemMarker+" "+tos.Digest, 150*time.Second); err != nil {
		t.Fatalf("%v\nreproduce: %s\nconsole:\n%s", err, vm.CommandLine(), vm.Console())
	}
}

// TestTestOSDataFiles: with DataFiles the data partition is an ext4
// filesystem that e2fsck finds clean, holding that many files, and the
// digest is the partition's SHA-256.
func TestTestOSDataFiles(t *testing.T) {
	needs.Tool(t, "mkfs.ext4", "e2fsck", "debugfs", "/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "/boot/vmlinuz-*")
	tos, err := TestOSConfig{Dir: t.TempDir(), ESPSize: 40 << 20, DataSize: 16 << 20, DataFiles: 9}.Build(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", tos.Data).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn on the data partition: %v\n%s", err, out)
	}
	n := 0
	for _, dir := range []string{"/home", "/opt"} {
		out, err := exec.Command("debugfs", "-R", "ls -p "+dir, tos.Data).Output()
		if err != nil {
			t.Fatalf("debugfs ls %s: %v", dir, err)
		}
		n += strings.Count(string(out), ".bin/")
	}
	if n != 9 {
		t.Errorf("data partition holds %d files, want 9", n)
	}
	b, _ := os.ReadFile(tos.Data)
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != tos.Digest {
		t.Errorf("digest %s is not the data partition's SHA-256", tos.Digest)
	}
}
