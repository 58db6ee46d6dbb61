package qemutests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/tracker"
)

// buildStick runs `pxeswarm build usb` with the classroom's kernel and
// initramfs (the serial console last, so the agent's menu reads there)
// and returns the stick image's path.
func (c *classroom) buildStick(t *testing.T, name string, args ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	args = append([]string{"build", "usb", "--out", out, "--kernel", c.kernel, "--initramfs", c.initrd,
		"--console", "tty0", "--console", "ttyS0,115200"}, args...)
	b, err := exec.Command(c.bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pxeswarm %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	t.Logf("pxeswarm build usb:\n%s", b)
	return out
}

// startStick boots v under OVMF from the stick on USB (first in the
// boot order), with its blank virtio disk(s) and its NIC on the LAN.
func (c *classroom) startStick(t *testing.T, v *vm, stick string, disks ...string) *qemu.VM {
	t.Helper()
	ds := []qemu.Disk{{Path: stick, USB: true, BootIndex: 1}}
	for _, d := range append([]string{v.disk}, disks...) {
		ds = append(ds, qemu.Disk{Path: d})
	}
	m, err := qemu.Config{Name: v.name, Firmware: qemu.UEFI, Memory: 768, NetNS: c.lan.NS.Name, Tap: v.tap, MAC: v.mac,
		Disks: ds, Timeout: 10 * time.Minute, Console: &v.console,
	}.Boot(c.ctx, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Kill() })
	return m
}

// TestUSBStick boots the rescue stick (`pxeswarm build usb`) under OVMF
// as a USB mass-storage device, in both modes:
//
//   - network: the stick has no images; the agent finds the server by
//     DHCP, follows its plan and writes a blank virtio disk from the
//     swarm;
//   - local: the stick carries the test OS; the machine has two blank
//     disks, so the agent asks at the console which one to write; the
//     test answers with the larger one. The image is copied from the
//     stick's data partition, then seeded to the server's tracker.
//
// Both times the agent names the stick by the partition systemd-boot was
// loaded from, the written partitions match the image byte for byte, and
// the stick's bytes are unchanged (SHA-256 before and after).
func TestUSBStick(t *testing.T) {
	c := newClassroom(t, "usb", "full")

	t.Run("network", func(t *testing.T) {
		stick := c.buildStick(t, "net-stick.img")
		before := fileSum(t, stick)
		v := c.newVM(t, "usb-net", qemu.UEFI, "52:54:00:c5:00:01")
		m := c.startStick(t, v, stick)
		line := expect(t, v, m, 4*time.Minute, initramfs.MarkStick)
		if !strings.Contains(line, "found-by="+initramfs.FoundByEFI) || !strings.Contains(line, "mode="+initramfs.ModeNetwork) {
			t.Errorf("stick line %q: want found-by=efi mode=network", line)
		}
		expect(t, v, m, 2*time.Minute, initramfs.MarkLease, initramfs.MarkPlan, initramfs.MarkTable, initramfs.MarkWriting)
		expect(t, v, m, 8*time.Minute, initramfs.MarkImageDone)
		expect(t, v, m, 2*time.Minute, initramfs.MarkReboot)
		if err := m.Wait(); err != nil {
			t.Errorf("QEMU after the agent's reboot: %v", err)
		}
		if !strings.Contains(v.console.String(), initramfs.MarkTarget+" /dev/vda") {
			t.Errorf("the target was not the virtio disk /dev/vda (the stick is /dev/sda)")
		}
		c.checkDisk(t, v)
		if task := c.tasks(t)[v.mac]; task.State != protocol.TaskDone {
			t.Errorf("task %s is %q, want done", task.ID, task.State)
		}
		if fileSum(t, stick) != before {
			t.Errorf("the stick's bytes changed")
		}
	})

	t.Run("local", func(t *testing.T) {
		stick := c.buildStick(t, "local-stick.img", "--image", c.tos.Torrent, "--source", c.tos.ESP+","+c.tos.Data,
			"--seed-for", "30s", "--tracker", "http://"+serverAddr+":8080/announce")
		before := fileSum(t, stick)
		v := c.newVM(t, "usb-local", qemu.UEFI, "52:54:00:c5:00:02")
		// A second, larger blank disk: two disks fit, so the agent asks.
		other := v.disk
		v.disk = filepath.Join(t.TempDir(), "big.img")
		if err := os.WriteFile(v.disk, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(v.disk, 192<<20); err != nil {
			t.Fatal(err)
		}
		m := c.startStick(t, v, stick, other)
		line := expect(t, v, m, 4*time.Minute, initramfs.MarkStick)
		if !strings.Contains(line, "found-by="+initramfs.FoundByEFI) || !strings.Contains(line, "mode="+initramfs.ModeLocal) {
			t.Errorf("stick line %q: want found-by=efi mode=local", line)
		}
		expect(t, v, m, time.Minute, initramfs.MarkPlan+" task=stick", initramfs.MarkChoose)
		// Answer with the 192 MiB disk's number.
		var pick string
		waitFor(t, "the disk menu", time.Minute, func() bool {
			m := regexp.MustCompile(`(?m)^\s+(\d)\) (/dev/vd\w) \(192MiB`).FindStringSubmatch(v.console.String())
			if m != nil {
				pick = m[1]
			}
			return m != nil
		})
		if err := m.Type(pick + "\r"); err != nil { // Enter on a serial terminal
			t.Fatal(err)
		}
		expect(t, v, m, time.Minute, initramfs.MarkChosen, initramfs.MarkTable, initramfs.MarkWriting)
		expect(t, v, m, 5*time.Minute, initramfs.MarkImageDone)
		lease := expect(t, v, m, 2*time.Minute, initramfs.MarkLease)
		expect(t, v, m, time.Minute, initramfs.MarkSeeding)
		// The tracker sees the stick's machine as a complete peer.
		addr := regexp.MustCompile(`addr=([0-9.]+)/`).FindStringSubmatch(lease)
		if addr == nil {
			t.Fatalf("lease line %q has no address", lease)
		}
		waitFor(t, "the machine seeding on the tracker", 40*time.Second, func() bool {
			var stats []tracker.SwarmStats
			if json.Unmarshal([]byte(admin(t, c.lan.NS, c.token, "GET", "/stats", "")), &stats) != nil {
				return false
			}
			for _, s := range stats {
				for _, p := range s.PeerList {
					if s.InfoHash == c.tos.Image.InfoHash.HexString() && p.Addr.Addr().String() == addr[1] && p.Complete {
						return true
					}
				}
			}
			return false
		})
		expect(t, v, m, 2*time.Minute, initramfs.MarkPowerOff)
		if err := m.Wait(); err != nil {
			t.Errorf("QEMU after the agent's power-off: %v", err)
		}
		c.checkDisk(t, v)
		if b, err := os.ReadFile(other); err != nil || strings.Trim(string(b), "\x00") != "" {
			t.Errorf("the disk not chosen was written (err %v)", err)
		}
		if fileSum(t, stick) != before {
			t.Errorf("the stick's bytes changed")
		}
	})
}
