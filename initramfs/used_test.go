package initramfs

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// TestRunUsedBlocks: the agent writes a used-block image (a FAT16 ESP and
// an ext4 root, made with their own tools) from a real server and seeder
// onto a disk whose old bytes are random. The table is made, the read-back
// digest is the packed image's, each partition's filesystem checks clean
// and reads back every file, and the free space holds the disk's old
// bytes: written through the extents, nothing else. A second task in
// verify mode finds the image there and downloads nothing.
func TestRunUsedBlocks(t *testing.T) {
	const partSize, diskSize = 20 * MiB, 48 * MiB
	esp := fstest.RandomFile(t, "esp.img", partSize, 1)
	root := fstest.RandomFile(t, "root.img", partSize, 2)
	vols := []*fstest.Volume{
		fstest.MakeFAT(t, esp, fstest.NewFiles(t, 16, 300<<10), "-F", "16"),
		fstest.MakeExt(t, root, fstest.NewFiles(t, 12, 500<<10), "-t", "ext4"),
	}
	paths := []string{esp, root}
	im, err := imager.Create(context.Background(), infoLogger(t), imager.CreateConfig{
		Name: "demo", Sources: paths, Table: "gpt", PieceLength: imager.MinPieceLength,
		Parts: []imager.PartInfo{
			{Number: 1, Size: partSize, Label: "ESP", Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
			{Number: 2, Size: partSize, Label: "root"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var packed [][]byte
	for i, f := range im.Files {
		// At least two extents: a gap between them that a write not
		// through the extents would land in.
		if f.Part.Filesystem == "" || len(f.Part.Extents) < 2 || f.Length >= partSize/2 {
			t.Fatalf("part %d: filesystem %q, %d extents, %d of %d bytes: want a used-block part with a gap", i+1, f.Part.Filesystem, len(f.Part.Extents), f.Length, partSize)
		}
		src, err := os.Open(paths[i])
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, f.Length)
		if _, err := io.ReadFull(io.NewSectionReader(imager.OnExtents(src, f.Part.Extents), 0, f.Length), b); err != nil {
			t.Fatal(err)
		}
		src.Close()
		packed = append(packed, b)
	}
	s := newServerImage(t, im, paths, packed)

	// The disk's old bytes: random between its first and last MiB (its
	// old GPT and the backup's room stay).
	disks, disk := fakeMachine(t, diskSize)
	fstest.Fill(t, disk, MiB, diskSize-2*MiB, 77)
	old := fstest.RandomFile(t, "old.img", diskSize-2*MiB, 77) // the same bytes, from offset MiB

	task := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "vda"}, CreateTable: true, CheckMode: "fresh", After: "reboot"})
	r := agentConfig(t, s, disks, "pxeswarm.task="+task.ID)
	if err := r.run(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	r.wantMarkers(t, "pxeswarm: table gpt created on "+disk+" (2 partitions)", "pxeswarm: writing demo",
		"pxeswarm: IMAGE DONE sha256="+wholeSum(packed)+" infohash="+im.InfoHash.HexString(), "pxeswarm: rebooting")
	if st := s.state(t, task.ID).State; st != protocol.TaskDone {
		t.Errorf("task is %s, want done", st)
	}
	checkUsedDisk(t, disk, diskSize, im, vols, old)

	// Verify mode on the disk that holds the image: nothing to fetch.
	// (The fake kernel still lists the old partition 1; a real kernel
	// re-read the table.)
	if err := os.RemoveAll(filepath.Join(disks.Sys, "block", "vda", "vda1")); err != nil {
		t.Fatal(err)
	}
	second := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "vda"}, CheckMode: "verify", After: "poweroff"})
	r2 := agentConfig(t, s, disks, "")
	logs := &testlog.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = r2.cfg.Run(ctx, slog.New(slog.NewTextHandler(io.MultiWriter(logs, tWriter{t}), &slog.HandlerOptions{Level: slog.LevelInfo})))
	t.Logf("console:\n%s", r2.console)
	if err != nil {
		t.Fatalf("second Run = %v", err)
	}
	r2.wantMarkers(t, "pxeswarm: plan ok task="+second.ID, "pxeswarm: IMAGE DONE sha256="+wholeSum(packed), "pxeswarm: powering off")
	if !regexp.MustCompile(`msg="image written" .*downloaded=0B `).MatchString(logs.String()) {
		t.Errorf("verify run on a disk holding the image downloaded something (no \"image written ... downloaded=0B\" in its log)")
	}
	checkUsedDisk(t, disk, diskSize, im, vols, old)

	// A plan with discard: the free space is discarded (the disk is a
	// file: punched holes read zero); the image stays.
	third := s.addTask(t, pxe.TaskSettings{Target: protocol.Target{Disk: "vda"}, CheckMode: "verify", After: "poweroff", Discard: true})
	r3 := agentConfig(t, s, disks, "")
	if err := r3.run(t); err != nil {
		t.Fatalf("third Run = %v", err)
	}
	r3.wantMarkers(t, "pxeswarm: plan ok task="+third.ID, "pxeswarm: IMAGE DONE sha256="+wholeSum(packed), "pxeswarm: powering off")
	checkUsedDisk(t, disk, diskSize, im, vols, "")
}

// checkUsedDisk checks each partition of disk (by its GPT): its
// filesystem is clean and reads back every file; the bytes outside its
// extents are old's (old holds the disk's bytes from offset MiB), or
// zeros (discarded) when old is "".
func checkUsedDisk(t *testing.T, disk string, size int64, im *imager.Image, vols []*fstest.Volume, old string) {
	t.Helper()
	f := fstest.Open(t, disk)
	var o io.ReaderAt = zeros{}
	want := "zeros (discarded)"
	if old != "" {
		o, want = fstest.Open(t, old), "the disk's old bytes"
	}
	tab, err := partition.ReadTable(f, size, 512)
	if err != nil || len(tab.Partitions) != len(vols) {
		t.Fatalf("ReadTable(%s) = %d partitions, %v; want %d", disk, len(tab.Partitions), err, len(vols))
	}
	for i, p := range tab.Partitions {
		vols[i].Check(t, fstest.Extract(t, disk, p.Start, im.Files[i].Part.Size))
		for _, g := range im.Files[i].Part.Extents.Gaps(im.Files[i].Part.Size) {
			if !fstest.SameRange(t, f, p.Start+g.Off, o, p.Start+g.Off-MiB, g.Len) {
				t.Errorf("partition %d: free space at %d (+%d) is not %s", p.Number, g.Off, g.Len, want)
				break
			}
		}
	}
}

// zeros reads as zero bytes everywhere.
type zeros struct{}

func (zeros) ReadAt(b []byte, _ int64) (int, error) { clear(b); return len(b), nil }
