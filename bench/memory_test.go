package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// TestMeasureMemory runs the memory figure at a small scale (a 1 GiB
// image, a 3 s fetch at 16 MiB/s) with a freshly built pxeswarm: both
// processes report an RSS after load, while running and at its high-water
// mark, and a Go heap from the GC trace; the fetch moved data; and the
// report names the goal.
func TestMeasureMemory(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pxeswarm")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/pxeswarm").CombinedOutput(); err != nil {
		t.Fatalf("build pxeswarm: %v\n%s", err, out)
	}
	mc, err := measureMemory(bin, t.TempDir(), 1<<30, 3*time.Second, 16<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	if mc.pieces != 2048 || mc.piece != 512<<10 {
		t.Errorf("1 GiB image: %d pieces of %d, want the default 2048 of 512 KiB", mc.pieces, mc.piece)
	}
	for name, m := range map[string]procMem{"seed": mc.seed, "fetch": mc.fetch} {
		t.Logf("%s: %+v", name, m)
		if m.loaded <= 0 || m.sampled <= 0 || m.hwm <= 0 || m.anon <= 0 || m.file <= 0 || m.heapPeak <= 0 || m.heapPeak < m.heapLive {
			t.Errorf("%s: figures out of order: %+v", name, m)
		}
	}
	if mc.fetched < 8<<20 {
		t.Errorf("the fetch wrote %d bytes in 3 s at 16 MiB/s", mc.fetched)
	}
	md := mc.markdown()
	t.Log(md)
	if !strings.Contains(md, "## Memory") || !strings.Contains(md, "256 MiB") {
		t.Errorf("report section lacks its heading or the goal:\n%s", md)
	}
}

// TestUnpackedSize checks the initramfs size against a gzip cpio archive
// of two files and a directory: files rounded up to 4 KiB pages, the
// directory not counted.
func TestUnpackedSize(t *testing.T) {
	var raw bytes.Buffer
	w := cpio.Newc.Writer(&raw)
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.StaticFile("bin/agent", strings.Repeat("a", 5000), 0o755),
		cpio.StaticFile("init", "x", 0o755),
	}
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()
	for name, data := range map[string][]byte{"plain": raw.Bytes(), "gzip": gz.Bytes()} {
		path := filepath.Join(t.TempDir(), "initramfs")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		n, err := unpackedSize(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n != 8192+4096 {
			t.Errorf("%s: unpacked size %d, want 12288 (8 KiB + 4 KiB)", name, n)
		}
	}
}
