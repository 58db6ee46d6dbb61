package initramfs

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/loopdev"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// loopDisk attaches a sparse file as a loop device with partition
// scanning and detaches it when the test ends.
func loopDisk(t *testing.T, size int64) string {
	t.Helper()
	backing := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(backing)
	if err != nil {
		t.Fatal(err)
	}
	// Old contents, so that "untouched" and "overwritten" mean something.
	f.Truncate(size)
	f.WriteAt(bytes.Repeat([]byte("old system "), 100000), 0)
	f.Close()
	dev := loopdev.Attach(t, backing, true)
	t.Logf("attached %s to %s", backing, dev)
	return dev
}

// TestRunLoopDevice: the whole flow onto a real block device: the kernel
// gets the new table (BLKRRPART), the image goes through the partition
// nodes (opened O_EXCL), is read back from the disk past the page cache,
// and the table is re-read at the end.
func TestRunLoopDevice(t *testing.T) {
	dev := loopDisk(t, 32*MiB)
	name := filepath.Base(dev)
	s := newServer(t)
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: name}, CreateTable: true, CheckMode: "fresh", After: "reboot"})
	r := agentConfig(t, s, partition.Config{IncludeVirtual: true}, "pxeswarm.task="+task.ID)
	if err := r.run(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	r.wantMarkers(t, MarkPlan, "pxeswarm: disk "+dev+" 32MiB", "pxeswarm: target "+dev+" (32MiB)",
		"pxeswarm: table gpt created on "+dev+" (2 partitions)", "pxeswarm: writing demo", "pxeswarm: IMAGE DONE sha256="+wholeSum(s.parts), MarkReboot)
	for i, want := range s.parts {
		node := dev + "p" + string(rune('1'+i))
		// The final BLKRRPART drops and re-adds the partitions; devtmpfs
		// makes their nodes again a moment later.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(node); err == nil {
				break
			}
		}
		got, err := os.ReadFile(node)
		if err != nil {
			t.Fatalf("partition node after Run: %v", err)
		}
		if len(got) != 4*MiB || !bytes.Equal(got[:len(want)], want) {
			t.Errorf("%s: %d bytes, image part %d %s", node, len(got), i+1, map[bool]string{true: "matches", false: "differs"}[bytes.Equal(got[:min(len(got), len(want))], want)])
		}
	}
	checkDisk(t, dev, 32*MiB, s.parts)
	if st := s.state(t, task.ID).State; st != protocol.TaskDone {
		t.Errorf("task is %s, want done", st)
	}
	// The kernel knows both partitions after the final re-read.
	for _, p := range []string{"p1", "p2"} {
		if _, err := os.Stat(filepath.Join("/sys/block", name, name+p)); err != nil {
			t.Errorf("kernel partition %s%s after Run: %v", name, p, err)
		}
	}
}

// TestRunLoopTooSmall: a block device too small for the image is never
// opened for writing.
func TestRunLoopTooSmall(t *testing.T) {
	dev := loopDisk(t, 6*MiB)
	s := newServer(t)
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: filepath.Base(dev)}, CreateTable: true, CheckMode: "fresh", After: "reboot"})
	r := agentConfig(t, s, partition.Config{IncludeVirtual: true}, "pxeswarm.task="+task.ID)
	refused(t, s, r, dev, task.ID, "no disk to write the image to", "larger disk")
}

// TestRunLoopWholeDiskImage: a whole-disk image that carries its own MBR
// goes onto the whole device, and the kernel is made to re-read the table
// so the image's partition appears.
func TestRunLoopWholeDiskImage(t *testing.T) {
	const size = 8 * MiB
	img := filepath.Join(t.TempDir(), "whole.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	tab, err := partition.PlanTable(imager.Layout{Table: "mbr", Parts: []imager.PartInfo{{Number: 1, Size: 4 * MiB, Type: "0x83"}}}, size, 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := partition.WriteTable(f, size, tab); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte("partition one "), 4*MiB/14), tab.Partitions[0].Start)
	f.Close()
	whole, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	im, err := imager.Create(context.Background(), slog.New(slog.DiscardHandler), imager.CreateConfig{
		Name: "whole", Sources: []string{img}, Parts: []imager.PartInfo{{Number: 0}}, PieceLength: imager.MinPieceLength})
	if err != nil {
		t.Fatal(err)
	}

	// The image's last 3 MiB are zeros: mktorrent leaves them out (zero
	// detection), and the agent must zero them on a disk that held
	// something else there.
	part := im.Files[0].Part
	if part.Gaps != imager.GapsZero || len(part.Extents) == 0 {
		t.Fatalf("whole-disk image: gaps %q, %d extents; want zero gaps (zero detection)", part.Gaps, len(part.Extents))
	}
	var shipped []byte
	for _, e := range part.Extents {
		shipped = append(shipped, whole[e.Off:e.End()]...)
	}
	dev := loopDisk(t, 16*MiB)
	name := filepath.Base(dev)
	if df, err := os.OpenFile(dev, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	} else {
		df.WriteAt(bytes.Repeat([]byte("old data "), 16*MiB/9), 0)
		df.Close()
	}
	s := newServerImage(t, im, []string{img}, [][]byte{whole})
	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: name}, CheckMode: "fresh", After: "shell"})
	r := agentConfig(t, s, partition.Config{IncludeVirtual: true}, "")
	if err := r.run(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	r.wantMarkers(t, "pxeswarm: writing whole ("+bytesize.Format(im.Length)+") to "+dev, "pxeswarm: IMAGE DONE sha256="+wholeSum([][]byte{shipped}), MarkShell)
	if len(r.shells) != 1 || len(r.reboots) != 0 {
		t.Errorf("after-action shell: shells %v reboots %v, want the shell once and no reboot", r.shells, r.reboots)
	}
	got := make([]byte, len(whole))
	df, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	df.ReadAt(got, 0)
	df.Close()
	if !bytes.Equal(got, whole) {
		t.Errorf("the first %d bytes of %s differ from the whole-disk image", len(whole), dev)
	}
	if st := s.state(t, task.ID).State; st != protocol.TaskDone {
		t.Errorf("task is %s, want done", st)
	}
	sysPart := filepath.Join("/sys/block", name, name+"p1")
	if !kernelParsesMBR(t, img) {
		t.Logf("this kernel has no MBR partition parser (a partscan loop device of the image shows no partition): the re-read cannot show one")
	} else if _, err := os.Stat(sysPart); err != nil {
		t.Errorf("kernel partition %s after Run: %v; want the image's MBR partition re-read", sysPart, err)
	}
}

// kernelParsesMBR attaches img (which holds an MBR with one partition)
// read-only with partscan and reports whether the kernel found the
// partition.
func kernelParsesMBR(t *testing.T, img string) bool {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", "--partscan", "--read-only", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", img, err, out)
	}
	dev := strings.TrimSpace(string(out))
	defer func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	}()
	name := filepath.Base(dev)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join("/sys/block", name, name+"p1")); err == nil {
			return true
		}
	}
	return false
}
