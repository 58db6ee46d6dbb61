package qemutests

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// TestClassroomCapture is the image's life from a golden machine: a UEFI
// VM whose disk holds the test OS (GPT: a FAT ESP that boots it and an
// ext4 data partition with files) gets a capture task; it PXE-boots the
// agent, which uploads the disk's used blocks; the server publishes the
// image at once (no restart). Two blank VMs then deploy the captured
// image from the swarm and boot it: NEW SYSTEM BOOTED with the golden
// system's digest, every partition byte-identical to the golden one. The
// golden disk is byte-identical before and after.
func TestClassroomCapture(t *testing.T) {
	c := newClassroom(t, "cap", "full", "--auto", "none")
	golden, err := build.TestOSConfig{Dir: filepath.Join(t.TempDir(), "golden"), ESPSize: 40 << 20, DataSize: 24 << 20, DataFiles: 40}.Build(c.ctx, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	g := c.newVM(t, "golden", qemu.UEFI, "52:54:00:c7:00:01")
	if err := golden.WriteDisk(g.disk, 128<<20); err != nil {
		t.Fatal(err)
	}
	before := fileSum(t, g.disk)

	out := admin(t, c.lan.NS, c.token, "POST", "/api/tasks",
		fmt.Sprintf(`{"action":%q,"mac":%q,"image":"golden","target":{"disk":"first"},"after":"reboot"}`, protocol.ActionCapture, g.mac))
	var created pxe.CreatedTasks
	if err := json.Unmarshal([]byte(out), &created); err != nil || len(created.Tasks) != 1 {
		t.Fatalf("capture task: %v: %s", err, out)
	}
	task := created.Tasks[0]
	m := c.start(t, g)
	expect(t, g, m, 4*time.Minute, initramfs.MarkVersion, initramfs.MarkLease, initramfs.MarkPlan+" task="+task.ID+" image=golden",
		initramfs.MarkCapturing+" /dev/")
	line := expect(t, g, m, 6*time.Minute, initramfs.MarkCaptureDone)
	expect(t, g, m, time.Minute, initramfs.MarkReboot)
	m.Wait()
	if fileSum(t, g.disk) != before {
		t.Errorf("the golden disk changed during the capture")
	}
	var st protocol.CaptureState
	if err := json.Unmarshal([]byte(admin(t, c.lan.NS, c.token, "GET", "/api/captures/"+task.Capture, "")), &st); err != nil {
		t.Fatal(err)
	}
	if st.State != protocol.CapturePublished || st.Image != "golden" || !strings.Contains(line, "infohash="+st.InfoHash) {
		t.Fatalf("capture %s = %+v; console said %q", task.Capture, st, line)
	}
	if tk := c.tasks(t)[g.mac]; tk.State != protocol.TaskDone {
		t.Errorf("capture task is %s, want done", tk.State)
	}
	t.Logf("captured %s of a 128MiB disk (%d bytes received) as %s", st.Image, st.BytesIn, st.InfoHash)

	// Deploy the captured image to two blank machines.
	vms := []*vm{c.newVM(t, "copy-1", qemu.UEFI, "52:54:00:c7:00:02"), c.newVM(t, "copy-2", qemu.UEFI, "52:54:00:c7:00:03")}
	for _, v := range vms {
		admin(t, c.lan.NS, c.token, "POST", "/api/tasks", fmt.Sprintf(`{"mac":%q,"image":%q}`, v.mac, st.Image))
	}
	t.Run("deploy", func(t *testing.T) {
		for _, v := range vms {
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				m := c.start(t, v)
				expect(t, v, m, 4*time.Minute, initramfs.MarkPlan+" ", initramfs.MarkTable, initramfs.MarkWriting+" golden ")
				line := expect(t, v, m, 8*time.Minute, initramfs.MarkImageDone)
				if !strings.Contains(line, "infohash="+st.InfoHash) {
					t.Errorf("%s wrote another image: %q", v.name, line)
				}
				expect(t, v, m, 2*time.Minute, initramfs.MarkReboot)
				m.Wait()
				checkParts(t, v, golden.ESP, golden.Data)
				v.console = testlog.Buffer{}
				m = c.start(t, v)
				expect(t, v, m, 6*time.Minute, build.NewSystemMarker+" "+golden.Digest)
			})
		}
	})
}
