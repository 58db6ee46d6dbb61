package qemutests

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/netns"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
	"github.com/pxeswarm/pxeswarm/tracker"
)

// classroom is a LAN with `pxeswarm serve` publishing the test OS, and the
// real agent initramfs built with the server's key.
type classroom struct {
	*bootEnv
	tos   *build.TestOS
	state string
	serve []string // the serve command, to restart it
	kill  func()   // kills the running server
	bin   string
	// kernel and initrd are what the server hands out: the real agent,
	// with the server's key.
	kernel, initrd string
	ctx            context.Context
}

// newClassroom builds everything and starts the server in the given DHCP
// mode. Tasks start by themselves (--auto all), with the table created
// from the image's layout; UEFI machines get iPXE (--uefi-loader ipxe);
// extra flags are added to `pxeswarm serve` (a later flag wins over the
// defaults here).
func newClassroom(t *testing.T, tag, mode string, extra ...string) *classroom {
	t.Helper()
	return newClassroomOS(t, tag, mode, build.TestOSConfig{}, extra...)
}

// newClassroomOS is newClassroom with a test OS built from tosCfg (Dir
// and the sizes are set here).
func newClassroomOS(t *testing.T, tag, mode string, tosCfg build.TestOSConfig, extra ...string) *classroom {
	t.Helper()
	bin, boot, _ := sharedBuild(t)
	ctx := context.Background()
	work := t.TempDir()
	state := filepath.Join(work, "state")
	copyKey(t, state)
	tosCfg.Dir, tosCfg.ESPSize, tosCfg.DataSize = filepath.Join(work, "testos"), 40<<20, 16<<20
	tos, err := tosCfg.Build(ctx, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	c := &classroom{tos: tos, state: state, bin: bin, ctx: ctx, kernel: filepath.Join(boot, "vmlinuz"), initrd: filepath.Join(boot, "initramfs")}
	c.bootEnv = &bootEnv{lan: netns.NewLAN(t, tag, netip.MustParsePrefix(serverAddr+"/24")), log: &testlog.Buffer{}}
	c.serve = []string{"serve", "--image", tos.Torrent, "--source", tos.ESP + "," + tos.Data,
		"--interface", c.lan.Bridge, "--dhcp", mode, "--state-dir", state,
		"--kernel", filepath.Join(boot, "vmlinuz"), "--initramfs", filepath.Join(boot, "initramfs"),
		"--cmdline", "console=ttyS0 panic=-1", "--auto", "all", "--create-table", "--check", "fresh",
		"--seed-for", "15s", "--after", "reboot", "--uefi-loader", "ipxe"}
	c.serve = append(c.serve, extra...)
	c.kill = c.startServer(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", c.log.String())
		}
	})
	return c
}

// startServer (re)starts `pxeswarm serve` and waits until it is ready. It
// returns a func that kills it (SIGKILL, like a power cut).
func (c *classroom) startServer(t *testing.T) (kill func()) {
	t.Helper()
	cmd := c.lan.NS.Command(c.ctx, c.bin, c.serve...)
	mark := len(c.log.String())
	cmd.Stdout, cmd.Stderr = c.log, c.log
	exited := netns.Start(t, cmd)
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(c.log.String()[mark:], pxe.Ready) {
		select {
		case err := <-exited:
			t.Fatalf("pxeswarm serve exited before ready: %v\n%s", err, c.log.String())
		case <-deadline:
			t.Fatalf("pxeswarm serve not ready in 2m:\n%s", c.log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	token, err := os.ReadFile(filepath.Join(c.state, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	c.token = strings.TrimSpace(string(token))
	return func() {
		cmd.Process.Kill()
		<-exited
	}
}

// restartServer kills the server (SIGKILL) and starts it again on the
// same state.
func (c *classroom) restartServer(t *testing.T) {
	t.Helper()
	c.kill()
	c.kill = c.startServer(t)
}

// vm is one classroom machine with its own blank disk.
type vm struct {
	name    string
	fw      qemu.Firmware
	mac     string
	disk    string
	tap     string
	vars    string // the UEFI variable store of a SecureBoot machine
	console testlog.Buffer
}

func (c *classroom) newVM(t *testing.T, name string, fw qemu.Firmware, mac string) *vm {
	t.Helper()
	v := &vm{name: name, fw: fw, mac: mac, disk: filepath.Join(t.TempDir(), name+".img"), tap: c.lan.AddTap(t)}
	f, err := os.Create(v.disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(128 << 20)
	f.Close()
	if fw == qemu.SecureBoot {
		if v.vars, err = qemu.CopyVars(t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// start boots the machine (network first, then its disk).
func (c *classroom) start(t *testing.T, v *vm) *qemu.VM {
	t.Helper()
	m, err := qemu.Config{Name: v.name, Firmware: v.fw, Memory: 768, NetNS: c.lan.NS.Name, Tap: v.tap, MAC: v.mac,
		BootNetwork: true, Disks: []qemu.Disk{{Path: v.disk}}, Timeout: 10 * time.Minute, Console: &v.console,
		FirmwareLog: v.disk + ".fw.log", Vars: v.vars,
	}.Boot(c.ctx, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Kill() })
	return m
}

// expect waits for markers in order, failing with the console.
func expect(t *testing.T, v *vm, m *qemu.VM, timeout time.Duration, markers ...string) string {
	t.Helper()
	var line string
	for _, marker := range markers {
		var err error
		if line, err = m.Expect(marker, timeout); err != nil {
			t.Fatalf("%s: %v\nreproduce: %s\nconsole:\n%s", v.name, err, m.CommandLine(), v.console.String())
		}
	}
	return line
}

// checkDisk compares every partition on the machine's disk with the image.
func (c *classroom) checkDisk(t *testing.T, v *vm) {
	t.Helper()
	checkParts(t, v, c.tos.ESP, c.tos.Data)
}

// checkParts compares the partitions on the machine's disk with the
// files srcs, in order.
func checkParts(t *testing.T, v *vm, srcs ...string) {
	t.Helper()
	f, err := os.Open(v.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	tab, err := partition.ReadTable(f, st.Size(), 512)
	if err != nil {
		t.Fatalf("%s: reading its partition table: %v", v.name, err)
	}
	if len(tab.Partitions) != len(srcs) {
		t.Fatalf("%s: %d partitions, want %d: %+v", v.name, len(tab.Partitions), len(srcs), tab.Partitions)
	}
	for i, src := range srcs {
		want, _ := os.ReadFile(src)
		got := make([]byte, len(want))
		if _, err := f.ReadAt(got, tab.Partitions[i].Start); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: partition %d differs from %s", v.name, i+1, filepath.Base(src))
		}
	}
}

var writtenRE = regexp.MustCompile(`image written.*downloaded=(\S+) from_seeders=(\S+)`)

// fromPeers parses the agent's "image written" line: bytes it got from
// other terminals (downloaded minus from the server).
func fromPeers(t *testing.T, console string) int64 {
	m := writtenRE.FindStringSubmatch(console)
	if m == nil {
		t.Errorf("no 'image written' line on the console")
		return 0
	}
	down, err1 := bytesize.Parse(m[1])
	seed, err2 := bytesize.Parse(m[2])
	if err1 != nil || err2 != nil {
		t.Errorf("image written line %q: %v %v", m[0], err1, err2)
	}
	return down - seed
}

// machineUploads reads the tracker's statistics (/stats) for the test OS
// image and returns what each host other than the server uploaded, as
// the machines announced it (BEP 3 uploaded, kept by the tracker after a
// machine leaves): the bytes the machines gave each other.
func (c *classroom) machineUploads(t *testing.T) map[string]int64 {
	t.Helper()
	var stats []tracker.SwarmStats
	if err := json.Unmarshal([]byte(admin(t, c.lan.NS, c.token, "GET", "/stats", "")), &stats); err != nil {
		t.Fatal(err)
	}
	up := map[string]int64{}
	for _, s := range stats {
		if s.InfoHash != c.tos.Image.InfoHash.HexString() {
			continue
		}
		for _, h := range s.Hosts {
			if a := h.Addr.String(); a != serverAddr && !h.Addr.IsLoopback() {
				up[a] += h.Uploaded
			}
		}
	}
	return up
}

func (c *classroom) tasks(t *testing.T) map[string]pxe.Task {
	t.Helper()
	var list []pxe.Task
	if err := json.Unmarshal([]byte(admin(t, c.lan.NS, c.token, "GET", "/api/tasks", "")), &list); err != nil {
		t.Fatal(err)
	}
	byMAC := map[string]pxe.Task{}
	for _, task := range list {
		if old, ok := byMAC[task.MAC]; ok {
			t.Errorf("machine %s has two tasks: %s and %s", task.MAC, old.ID, task.ID)
		}
		byMAC[task.MAC] = task
	}
	return byMAC
}

// TestClassroom is the whole appliance: three machines with blank disks
// (two UEFI, one BIOS) PXE-boot our agent through their firmware, are
// imaged from the swarm with the table made from the image's layout,
// report done and reboot; booted again they get "no task" and boot their
// disks, and the UEFI ones print the new system's marker. Every partition
// matches the image, and the machines got pieces from each other.
func TestClassroom(t *testing.T) {
	c := newClassroom(t, "cls", "full")
	vms := []*vm{
		c.newVM(t, "uefi-1", qemu.UEFI, "52:54:00:c3:00:01"),
		c.newVM(t, "uefi-2", qemu.UEFI, "52:54:00:c3:00:02"),
		c.newVM(t, "bios-1", qemu.BIOS, "52:54:00:c3:00:03"),
	}
	t.Run("imaging", func(t *testing.T) {
		for _, v := range vms {
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				m := c.start(t, v)
				expect(t, v, m, 4*time.Minute, initramfs.MarkVersion, initramfs.MarkLease, initramfs.MarkPlan,
					initramfs.MarkTable, initramfs.MarkWriting)
				expect(t, v, m, 8*time.Minute, initramfs.MarkImageDone)
				expect(t, v, m, 2*time.Minute, initramfs.MarkReboot)
				if err := m.Wait(); err != nil {
					t.Errorf("%s: QEMU after the agent's reboot: %v", v.name, err)
				}
			})
		}
	})
	if t.Failed() {
		return
	}
	for _, v := range vms {
		c.checkDisk(t, v)
		t.Logf("%s says it got %s from other terminals", v.name, bytesize.Format(fromPeers(t, v.console.String())))
	}
	// The tracker's statistics: the machines uploaded to each other.
	var peers int64
	for addr, n := range c.machineUploads(t) {
		t.Logf("tracker: machine %s uploaded %s", addr, bytesize.Format(n))
		peers += n
	}
	if peers <= 0 {
		t.Errorf("the tracker saw no machine upload anything: the machines got no pieces from each other")
	}
	tasks := c.tasks(t)
	for _, v := range vms {
		if task := tasks[v.mac]; task.State != protocol.TaskDone {
			t.Errorf("%s: task %s is %q, want done", v.name, task.ID, task.State)
		}
	}
	t.Run("reboot", func(t *testing.T) {
		for _, v := range vms {
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				v.console = testlog.Buffer{}
				m := c.start(t, v)
				// No task now: the DHCP server offers no boot file, and the
				// firmware boots the disk.
				waitFor(t, v.name+" offered no boot file", 3*time.Minute, func() bool {
					for _, line := range strings.Split(c.log.String(), "\n") {
						if strings.Contains(line, "dhcp: no task; no boot file") && strings.Contains(line, "mac="+v.mac) {
							return true
						}
					}
					return false
				})
				if v.fw == qemu.UEFI {
					expect(t, v, m, 4*time.Minute, build.NewSystemMarker+" "+c.tos.Digest)
					return
				}
				// SeaBIOS's iPXE ROM talks to the screen only; SeaBIOS's debug
				// console shows the disk boot (the test OS has no BIOS loader).
				waitFor(t, v.name+" SeaBIOS boots the disk", time.Minute, func() bool {
					b, _ := os.ReadFile(v.disk + ".fw.log")
					return bytes.Contains(b, []byte("Booting from Hard Disk"))
				})
			})
		}
	})
}

// waitReport polls the server until mac's task has a report with at
// least frac of the image done in the given phase.
func (c *classroom) waitReport(t *testing.T, mac string, frac float64, timeout time.Duration) pxe.Task {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var task pxe.Task
		var list []pxe.Task
		out, err := adminTry(c.lan.NS, c.token, "GET", "/api/tasks", "")
		ok := err == nil && json.Unmarshal([]byte(out), &list) == nil
		if ok {
			ok = false
			for _, tk := range list {
				if tk.MAC == mac {
					task, ok = tk, true
				}
			}
		}
		if ok && task.LastReport != nil && task.LastReport.Phase == protocol.PhaseImaging && task.LastReport.BytesTotal > 0 &&
			float64(task.LastReport.BytesDone) >= frac*float64(task.LastReport.BytesTotal) {
			return task
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no imaging report with %.0f%% done within %v (last: %+v)", mac, frac*100, timeout, task.LastReport)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestClassroomServerRestart: `pxeswarm serve` is killed (SIGKILL) while a
// machine images, and started again on the same state. The machine
// finishes; afterwards the server has exactly one task for it, done, and
// the DHCP lease file still holds it. The server's upload is capped so the
// kill lands mid-transfer.
func TestClassroomServerRestart(t *testing.T) {
	c := newClassroom(t, "rst", "full", "--check", "verify", "--upload-limit", "3MiB")

	v := c.newVM(t, "restart", qemu.UEFI, "52:54:00:c4:00:02")
	m := c.start(t, v)
	expect(t, v, m, 4*time.Minute, initramfs.MarkPlan, initramfs.MarkWriting)
	c.waitReport(t, v.mac, 0.2, 4*time.Minute)
	c.restartServer(t)
	t.Logf("server killed and restarted while %s was imaging", v.name)
	expect(t, v, m, 8*time.Minute, initramfs.MarkImageDone, initramfs.MarkReboot)
	m.Wait()
	c.checkDisk(t, v)
	tasks := c.tasks(t) // fails on two tasks for one machine
	if tasks[v.mac].State != protocol.TaskDone {
		t.Errorf("%s: task %+v, want done", v.name, tasks[v.mac])
	}
	leases, _ := os.ReadFile(filepath.Join(c.state, "dhcp-leases.json"))
	if !strings.Contains(string(leases), v.mac) {
		t.Errorf("lease file lost %s:\n%s", v.mac, leases)
	}
}

// TestClassroomPowerLoss: a machine is killed (SIGKILL to QEMU, a power
// cut) once its report shows half the image written, and started again.
// Its task is still active, so it PXE-boots the agent again, which checks
// what the disk holds (verify mode) and fetches only the rest: it receives
// less than the image, and the disk ends byte-identical. What survives the
// cut is what the agent flushed (every imager.Config.FlushEvery, 5 s); at
// 1 MiB/s half the image is 13 s of imaging. (The used-block image has no
// zero pieces a blank disk already holds, so only flushed pieces count.)
func TestClassroomPowerLoss(t *testing.T) {
	c := newClassroom(t, "pwr", "full", "--check", "verify", "--upload-limit", "1MiB")
	v := c.newVM(t, "power", qemu.UEFI, "52:54:00:c7:00:01")
	m := c.start(t, v)
	expect(t, v, m, 4*time.Minute, initramfs.MarkPlan, initramfs.MarkWriting)
	c.waitReport(t, v.mac, 0.5, 4*time.Minute)
	m.Kill()
	t.Logf("%s: power cut at 50%%+", v.name)
	v.console = testlog.Buffer{}
	m = c.start(t, v)
	expect(t, v, m, 4*time.Minute, initramfs.MarkPlan, initramfs.MarkWriting)
	expect(t, v, m, 6*time.Minute, initramfs.MarkImageDone, initramfs.MarkReboot)
	m.Wait()
	m2 := writtenRE.FindStringSubmatch(v.console.String())
	if m2 == nil {
		t.Fatal("no 'image written' line after the restart")
	}
	down, err := bytesize.Parse(m2[1])
	if err != nil {
		t.Fatal(err)
	}
	if down >= c.tos.Image.Length {
		t.Errorf("after the power cut it downloaded %s, want less than the image (%s)", m2[1], bytesize.Format(c.tos.Image.Length))
	}
	t.Logf("resumed: downloaded %s of %s", m2[1], bytesize.Format(c.tos.Image.Length))
	c.checkDisk(t, v)
	if task := c.tasks(t)[v.mac]; task.State != protocol.TaskDone {
		t.Errorf("task %+v, want done", task)
	}
}

// TestClassroomProxy is the school network: dnsmasq on another host hands
// out addresses; pxeswarm in proxy mode boots and images the machine, and
// the agent finds the server through the proxy's option.
func TestClassroomProxy(t *testing.T) {
	needDnsmasq(t)
	c := newClassroom(t, "clp", "proxy")
	leases := schoolDHCP(t, c.lan)

	v := c.newVM(t, "uefi-proxy", qemu.UEFI, "52:54:00:c5:00:01")
	m := c.start(t, v)
	line := expect(t, v, m, 4*time.Minute, initramfs.MarkLease)
	if !strings.Contains(line, "addr=198.18.0.") || !strings.Contains(line, "server="+serverURL) {
		t.Errorf("lease line %q: want an address from dnsmasq and the server from the proxy", line)
	}
	expect(t, v, m, 8*time.Minute, initramfs.MarkImageDone, initramfs.MarkReboot)
	m.Wait()
	c.checkDisk(t, v)
	b, _ := os.ReadFile(leases)
	if !strings.Contains(string(b), v.mac) {
		t.Errorf("dnsmasq leases %q lack %s", b, v.mac)
	}
	v.console = testlog.Buffer{}
	m = c.start(t, v)
	expect(t, v, m, 4*time.Minute, build.NewSystemMarker+" "+c.tos.Digest)
}
