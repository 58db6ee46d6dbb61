package build

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/partition"
)

// TestPlanFAT32 checks the layout rule over every ESP size from 33 MiB
// to 300 MiB in 512-byte steps around each MiB (where go-diskfs went
// wrong) and a few large ones: the FAT has an entry for every cluster
// plus entries 0 and 1, one sector less would not, and the cluster count
// is a FAT32 one.
func TestPlanFAT32(t *testing.T) {
	var sizes []int64
	for m := int64(33); m <= 300; m++ {
		for d := int64(-8); d <= 8; d++ {
			sizes = append(sizes, m<<20+d*fatSector)
		}
	}
	sizes = append(sizes, 1<<30, 8<<30, 8<<30+fatSector, 20<<30, 100<<30)
	for _, size := range sizes {
		g, err := planFAT32(size)
		if err != nil {
			t.Fatalf("planFAT32(%d): %v", size, err)
		}
		entries := func(f uint32) uint64 { return uint64(f) * fatSector / 4 }
		clusters := func(f uint32) uint64 {
			return (uint64(g.Total) - fatReserved - fatCount*uint64(f)) / uint64(g.SectorsPerCluster)
		}
		if g.Total != uint32(size/fatSector) || uint64(g.Clusters) != clusters(g.SectorsPerFAT) {
			t.Fatalf("planFAT32(%d) = %+v: inconsistent", size, g)
		}
		if entries(g.SectorsPerFAT) < uint64(g.Clusters)+2 {
			t.Fatalf("planFAT32(%d) = %+v: %d FAT entries for %d clusters", size, g, entries(g.SectorsPerFAT), g.Clusters)
		}
		if f := g.SectorsPerFAT - 1; entries(f) >= clusters(f)+2 {
			t.Fatalf("planFAT32(%d) = %+v: %d sectors per FAT would do", size, g, f)
		}
		if g.Clusters < fatMinClusters {
			t.Fatalf("planFAT32(%d) = %+v: too few clusters for FAT32", size, g)
		}
	}
	for _, size := range []int64{0, 32 << 20, 33<<20 + 1, 3 << 40} {
		if _, err := planFAT32(size); !errors.Is(err, errFATSize) {
			t.Errorf("planFAT32(%d) = %v, want errFATSize", size, err)
		}
	}
}

// checkFAT runs dosfstools' and mtools' readers over the FAT32 at byte
// off of img: fsck.fat -n must find nothing, and mcopy must read each
// file in want byte for byte.
func checkFAT(t *testing.T, img string, off, size int64, want map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	// fsck.fat takes a whole file: copy the partition out.
	part := filepath.Join(dir, "part.img")
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	_, err = f.ReadAt(b, off)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(part, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// Clean: the version line and the summary line, nothing else.
	out, err := exec.Command("fsck.fat", "-n", part).CombinedOutput()
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); err != nil || len(lines) != 2 || !strings.Contains(lines[1], " clusters") {
		t.Errorf("fsck.fat -n: %v\n%s", err, out)
	}
	spec := fmt.Sprintf("%s@@%d", img, off)
	out, err = exec.Command("mdir", "-i", spec, "-/", "::").CombinedOutput()
	if err != nil {
		t.Errorf("mdir: %v\n%s", err, out)
	}
	for name, body := range want {
		dst := filepath.Join(dir, "got")
		os.Remove(dst)
		cmd := exec.Command("mcopy", "-n", "-i", spec, "::"+name, dst)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("mcopy %s: %v\n%s", name, err, out)
			continue
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, body) {
			t.Errorf("mcopy %s: %d bytes, differ from the %d written", name, len(got), len(body))
		}
	}
}

// TestUSBESPIsFAT32 builds a network-mode stick as `pxeswarm build usb`
// does, with Debian's systemd-boot and kernel-sized files: its ESP is the
// 64 MiB minimum, the size at which go-diskfs's own FAT32 had two
// clusters more than FAT entries. fsck.fat and mtools must accept it and
// read the boot manager back unchanged, and the BPB must give the
// partition's start as its hidden sectors.
func TestUSBESPIsFAT32(t *testing.T) {
	needs.Tool(t, "fsck.fat", "mcopy", "mdir", DefaultSystemdBoot)
	dir := t.TempDir()
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*13 + n)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kernel, initrd := write("vmlinuz", 8<<20+123), write("initramfs", 20<<20+4567)
	out := filepath.Join(dir, "stick.img")
	res, err := USBConfig{Out: out, Kernel: kernel, Initramfs: initrd, Server: "http://198.18.0.1:8080"}.Build(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.ESPSize != 64<<20 {
		t.Fatalf("ESP is %d bytes: this test wants the 64 MiB one", res.ESPSize)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := partition.ReadTable(f, res.Size, 512)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	esp := tab.Partitions[0]
	want := map[string][]byte{}
	for name, src := range map[string]string{"/EFI/BOOT/BOOTX64.EFI": DefaultSystemdBoot, "/pxeswarm/vmlinuz": kernel, "/pxeswarm/initramfs": initrd} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		want[name] = b
	}
	checkFAT(t, out, esp.Start, esp.Size, want)
	// And go-diskfs, as the agent reads it.
	if got := readFAT(t, out, 1, "/EFI/BOOT/BOOTX64.EFI"); got != string(want["/EFI/BOOT/BOOTX64.EFI"]) {
		t.Errorf("go-diskfs reads BOOTX64.EFI with %d bytes, want %d", len(got), len(want["/EFI/BOOT/BOOTX64.EFI"]))
	}
	bpb := make([]byte, 512)
	f, _ = os.Open(out)
	f.ReadAt(bpb, esp.Start)
	f.Close()
	if hidden := binary.LittleEndian.Uint32(bpb[28:]); int64(hidden)*512 != esp.Start {
		t.Errorf("BPB hidden sectors %d, want the ESP's start sector %d", hidden, esp.Start/512)
	}
	if label := string(bpb[71:82]); label != fmt.Sprintf("%-11s", strings.ToUpper(initramfs.StickESPLabel)) {
		t.Errorf("BPB label %q, want %s", label, initramfs.StickESPLabel)
	}
}

// TestTestOSESPIsFAT32 builds the test OS as the QEMU tests do and
// checks its ESP (48 MiB) with fsck.fat and mtools.
func TestTestOSESPIsFAT32(t *testing.T) {
	needs.Tool(t, "fsck.fat", "mcopy", "mdir", DefaultSystemdBoot, "/boot/vmlinuz-*")
	dir := t.TempDir()
	tos, err := TestOSConfig{Dir: dir}.Build(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(tos.ESP)
	if err != nil {
		t.Fatal(err)
	}
	sdboot, err := os.ReadFile(DefaultSystemdBoot)
	if err != nil {
		t.Fatal(err)
	}
	checkFAT(t, tos.ESP, 0, st.Size(), map[string][]byte{"/EFI/BOOT/BOOTX64.EFI": sdboot})
}
