package qemutests

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// startDirect boots the machine straight into a kernel and initramfs
// (-kernel/-initrd), no firmware network boot: the agent must find the
// server by DHCP alone (the command line names no server).
func (c *classroom) startDirect(t *testing.T, v *vm, initrd string) *qemu.VM {
	t.Helper()
	return c.startDirectOn(t, c.lan.NS.Name, v, initrd)
}

// startDirectOn is startDirect with v's tap in the network namespace ns.
func (c *classroom) startDirectOn(t *testing.T, ns string, v *vm, initrd string) *qemu.VM {
	t.Helper()
	m, err := qemu.Config{Name: v.name, Memory: 768, NetNS: ns, Tap: v.tap, MAC: v.mac,
		Kernel: c.kernel, Initramfs: initrd, Append: "console=ttyS0 panic=-1",
		Disks: []qemu.Disk{{Path: v.disk}}, Timeout: 10 * time.Minute, Console: &v.console,
	}.Boot(c.ctx, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Kill() })
	return m
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestAgent boots the real agent directly (-kernel/-initrd) in two VMs at
// once with blank virtio disks: each discovers the server by DHCP,
// verifies its plan, creates the table, writes the two-partition image
// from the swarm and reports done; every partition matches the image and
// together they got bytes from each other, not only from the server. Two
// more machines must refuse: one whose disk is too small, one whose
// initramfs trusts another key (so the server's plan does not verify).
// Both show the ERROR marker and leave their disks untouched, and neither
// opens a shell: the first halts (its verified plan carries the server's
// default on_error, halt), the second, with no verified plan, starts over
// (the agent's default without a plan, retry).
func TestAgent(t *testing.T) {
	// The server's upload is capped (like a server on one gigabit link
	// feeding a room): with an uncapped server on loopback-fast taps, two
	// machines need nothing from each other. Each seeds 2 min after it is
	// done, so the two overlap even when a loaded host boots one of them
	// a minute after the other (seen: the first was done before the
	// second asked for its plan; with 324 driver modules the initramfs
	// boots slower, and in CI the second joined the swarm 3 s after the
	// first had stopped its 45 s of seeding).
	c := newClassroom(t, "agt", "full", "--upload-limit", "3MiB", "--seed-for", "2m")
	a := c.newVM(t, "agent-1", "", "52:54:00:c6:00:01")
	b := c.newVM(t, "agent-2", "", "52:54:00:c6:00:02")
	small := c.newVM(t, "too-small", "", "52:54:00:c6:00:03")
	os.Truncate(small.disk, 16<<20)
	foreign := c.newVM(t, "other-key", "", "52:54:00:c6:00:04")

	// An initramfs with another server's key.
	otherState := t.TempDir() // build initramfs makes a key pair here
	otherBoot := t.TempDir()
	out, err := exec.Command(c.bin, "build", "initramfs", "--out", otherBoot, "--kernel", c.kernel,
		"--key", filepath.Join(otherState, "plan-key.pub")).CombinedOutput()
	if err != nil {
		t.Fatalf("build initramfs with another key: %v\n%s", err, out)
	}
	// A machine on another LAN where a rogue dnsmasq and HTTP server
	// replay an old plan, really signed by this server's key.
	rogueLAN := newRogueLAN(t, c, "52:54:00:c6:00:05")
	rogue := rogueLAN.vm
	smallSum, foreignSum, rogueSum := fileSum(t, small.disk), fileSum(t, foreign.disk), fileSum(t, rogue.disk)

	t.Run("machines", func(t *testing.T) {
		for _, v := range []*vm{a, b} {
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				m := c.startDirect(t, v, c.initrd)
				line := expect(t, v, m, 3*time.Minute, initramfs.MarkVersion, initramfs.MarkLease)
				if !strings.Contains(line, "from=dhcp") {
					t.Errorf("%s: lease line %q, want the server URL from DHCP", v.name, line)
				}
				expect(t, v, m, 2*time.Minute, initramfs.MarkPlan, initramfs.MarkTable, initramfs.MarkWriting)
				expect(t, v, m, 8*time.Minute, initramfs.MarkImageDone, initramfs.MarkReboot)
				m.Wait()
			})
		}
		refuse := func(v *vm, initrd, why, then string) {
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				m := c.startDirect(t, v, initrd)
				line := expect(t, v, m, 4*time.Minute, initramfs.MarkError)
				if !strings.Contains(line, why) {
					t.Errorf("%s: %q, want it to mention %q", v.name, line, why)
				}
				expect(t, v, m, time.Minute, then)
				if c := v.console.String(); strings.Contains(c, initramfs.MarkWriting) || strings.Contains(c, initramfs.MarkShell) {
					t.Errorf("%s: the agent started writing or opened a shell", v.name)
				}
			})
		}
		refuse(small, c.initrd, "smaller than", initramfs.MarkHalt+" (on_error=halt from plan)")
		refuse(foreign, filepath.Join(otherBoot, "initramfs"), "signature", initramfs.MarkRetry+" in 15s (attempt 2; on_error=retry from default)")
		t.Run(rogue.name, func(t *testing.T) {
			t.Parallel()
			m := c.startDirectOn(t, rogueLAN.lan.NS.Name, rogue, c.initrd)
			line := expect(t, rogue, m, 4*time.Minute, initramfs.MarkError)
			if !strings.Contains(line, "replay") {
				t.Errorf("%s: %q, want the agent to say the plan is a replay", rogue.name, line)
			}
			if !rogueLAN.served() {
				t.Errorf("%s: the rogue server was never asked for the plan: the test proved nothing", rogue.name)
			}
			// No verified plan: the agent retries, and never opens a shell.
			expect(t, rogue, m, time.Minute, initramfs.MarkRetry)
			if con := rogue.console.String(); strings.Contains(con, initramfs.MarkShell) {
				t.Errorf("%s: the agent opened a shell", rogue.name)
			}
			if strings.Contains(rogue.console.String(), initramfs.MarkWriting) {
				t.Errorf("%s: the agent started writing on a replayed plan", rogue.name)
			}
		})
	})
	if t.Failed() {
		return
	}
	var peers int64
	for _, v := range []*vm{a, b} {
		c.checkDisk(t, v)
		peers += fromPeers(t, v.console.String())
	}
	if peers <= 0 {
		t.Errorf("neither machine got bytes from the other: the swarm did not swarm")
	}
	t.Logf("bytes the two machines got from each other: %s", bytesize.Format(peers))
	if fileSum(t, small.disk) != smallSum || fileSum(t, foreign.disk) != foreignSum || fileSum(t, rogue.disk) != rogueSum {
		t.Error("a refused machine's disk changed")
	}
	tasks := c.tasks(t)
	for _, v := range []*vm{a, b} {
		if tasks[v.mac].State != protocol.TaskDone {
			t.Errorf("%s: task %+v, want done", v.name, tasks[v.mac])
		}
	}
	for _, v := range []*vm{small, foreign} {
		if st := tasks[v.mac].State; st != protocol.TaskFailed && !bytes.Contains([]byte(v.console.String()), []byte(initramfs.MarkError)) {
			t.Errorf("%s: task state %q", v.name, st)
		}
	}
}
