package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// TestCaptureFloors checks what the capture scenario measures against:
// the filesystem's own count of used bytes (dumpe2fs, ntfsinfo) agrees
// with pxeswarm's used map to within 1% on the bench's images, and the
// read floor, run on a read-only loop device of the image, reads the
// device's whole size and exactly the used map's bytes.
func TestCaptureFloors(t *testing.T) {
	needs.Root(t, "losetup")
	needs.Tool(t, "dumpe2fs", "ntfsinfo")
	for _, kind := range []string{"ext4", "ntfs"} {
		t.Run(kind, func(t *testing.T) {
			img := fsBenchImage(t, kind)
			used, by, err := fsUsed(kind, img.path)
			if err != nil {
				t.Fatal(err)
			}
			if d := float64(used-img.used) / float64(img.used); d < -0.01 || d > 0.01 {
				t.Errorf("%s counts %d bytes used, the used map %d (%.2f%% apart), want within 1%%", by, used, img.used, 100*d)
			}
			b, err := exec.Command("losetup", "-r", "--direct-io=on", "-f", "--show", img.path).CombinedOutput()
			if err != nil {
				t.Fatalf("losetup: %v: %s", err, b)
			}
			dev := strings.TrimSpace(string(b))
			t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
			if err := dropCaches(dev, img.path); err != nil {
				t.Fatal(err)
			}
			size, read, extents, err := readUsed(dev)
			if err != nil {
				t.Fatal(err)
			}
			if size != img.size || read != img.used || extents != len(img.usedExts) {
				t.Errorf("readUsed(%s) = size %d, read %d in %d extents; want %d, %d in %d", dev, size, read, extents, img.size, img.used, len(img.usedExts))
			}
		})
	}
}

// TestCheckCapture: the quick run's gate fails a capture over either
// bound and passes one within both; the time bound is against the slower
// floor, whichever it is.
func TestCheckCapture(t *testing.T) {
	const used = 100 << 20
	rate := int64(100e6) // used/R = 8.39 s
	ok := captureResult{kind: "ext4", used: used, size: 4 * used, rate: rate, wire: used * 104 / 100, read: time.Second, took: 9 * time.Second}
	slowDisk := ok
	slowDisk.read, slowDisk.took = 20*time.Second, 25*time.Second
	tooMuch := ok
	tooMuch.wire = used * 107 / 100
	tooSlow := ok
	tooSlow.took = 11 * time.Second
	tooSlowDisk := slowDisk
	tooSlowDisk.took = 27 * time.Second
	for _, tc := range []struct {
		name string
		c    captureResult
		fail bool
	}{{"within", ok, false}, {"disk-bound within", slowDisk, false}, {"1.07×used on the wire", tooMuch, true},
		{"1.31×used/R", tooSlow, true}, {"1.35×read", tooSlowDisk, true}} {
		err := checkCapture([]captureResult{tc.c})
		if (err != nil) != tc.fail {
			t.Errorf("%s: checkCapture = %v, want failure %v", tc.name, err, tc.fail)
		}
	}
}
