// Package loopdev attaches files as loop devices for tests that need a
// real block device (root and losetup; the test is skipped without them,
// saying why). It owns nothing else.
package loopdev

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// Attach attaches backing as a loop device, with the kernel scanning it
// for partitions when partscan is set, and detaches it when the test
// ends (cleanups registered after Attach run before the detach). It
// returns the device's path.
func Attach(t testing.TB, backing string, partscan bool) string {
	t.Helper()
	needs.Root(t, "losetup")
	needs.Tool(t, "losetup")
	args := []string{"--find", "--show"}
	if partscan {
		args = append(args, "--partscan")
	}
	args = append(args, backing)
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s (no loop devices in this container?)", strings.Join(args, " "), err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}
