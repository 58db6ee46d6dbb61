package build

import (
	"context"
	"path/filepath"
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
