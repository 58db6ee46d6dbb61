// Package qemutests boots real firmware against a real `pxeswarm serve`:
// QEMU machines on taps in a test bridge, in a network namespace the test
// makes (198.18.0.0/15 only), with software emulation.
package qemutests

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/netns"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/pxe"
)

const (
	serverAddr = "198.18.0.1"
	serverURL  = "http://198.18.0.1:8080"
)

// syncBuffer collects a process's output for assertions while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func requireTools(t *testing.T) string {
	t.Helper()
	netns.Require(t)
	for _, tool := range []string{"qemu-system-x86_64", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s missing (make test installs it): %v", tool, err)
		}
	}
	for _, f := range []string{qemu.OVMF, "/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/ipxe.efi"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("%s missing (make test installs ovmf and ipxe): %v", f, err)
		}
	}
	kernel, err := qemu.DebianKernel()
	if err != nil {
		t.Skip(err)
	}
	return kernel
}

func buildPxeswarm(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pxeswarm")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/pxeswarm")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// admin calls the admin API from inside the namespace with curl.
func admin(t *testing.T, ns *netns.NS, token, method, path, body string) string {
	t.Helper()
	args := []string{"-sS", "-X", method, "-H", "Authorization: Bearer " + token, "-H", "Content-Type: application/json", "-w", "\n%{http_code}"}
	if body != "" {
		args = append(args, "--data", body)
	}
	out, err := ns.Run(15*time.Second, "curl", append(args, serverURL+path)...)
	if err != nil {
		t.Fatalf("curl %s %s: %v\n%s", method, path, err, out)
	}
	out = strings.TrimSpace(out)
	i := strings.LastIndexByte(out, '\n')
	if code := out[i+1:]; !strings.HasPrefix(code, "2") {
		t.Fatalf("%s %s = HTTP %s: %s", method, path, code, out[:max(i, 0)])
	}
	return out[:max(i, 0)]
}

// TestFirmwarePXEBoot boots SeaBIOS (with the NIC's iPXE ROM) and OVMF
// (with its own PXE, chaining our ipxe.efi over TFTP) against `pxeswarm
// serve` in full DHCP mode. A machine with a task loads our kernel and
// initramfs (the marker init shows the kernel command line carries the
// server URL); a machine without one is sent to its local disk.
func TestFirmwarePXEBoot(t *testing.T) {
	kernel := requireTools(t)
	bin := buildPxeswarm(t)
	ctx := context.Background()
	work := t.TempDir()
	initrd, err := qemu.BuildMarkerInitramfs(ctx, work)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(work, "lab.img")
	data := make([]byte, 4<<20)
	rand.Read(data)
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}

	lan := netns.NewLAN(t, "fw", netip.MustParsePrefix(serverAddr+"/24"))
	state := filepath.Join(work, "state")
	var serverLog syncBuffer
	serve := lan.NS.Command(ctx, bin, "serve", "--image", img, "--interface", lan.Bridge, "--dhcp", "full",
		"--state-dir", state, "--kernel", kernel, "--initramfs", initrd,
		"--cmdline", "console=ttyS0 panic=-1")
	serve.Stdout, serve.Stderr = &serverLog, &serverLog
	exited := netns.Start(t, serve)
	defer func() {
		if t.Failed() {
			t.Logf("server log:\n%s", serverLog.String())
		}
	}()
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(serverLog.String(), pxe.Ready) {
		select {
		case err := <-exited:
			t.Fatalf("pxeswarm serve exited before ready: %v\n%s", err, serverLog.String())
		case <-deadline:
			t.Fatalf("pxeswarm serve not ready in 2m:\n%s", serverLog.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	tokenBytes, err := os.ReadFile(filepath.Join(state, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenBytes))

	machines := []struct {
		name    string
		fw      qemu.Firmware
		mac     string
		task    bool
		markers []string
	}{
		{name: "bios-task", fw: qemu.BIOS, mac: "52:54:00:c1:00:01", task: true},
		{name: "uefi-task", fw: qemu.UEFI, mac: "52:54:00:c1:00:02", task: true,
			markers: []string{"NBP filename is ipxe.efi", "NBP file downloaded successfully", "/boot/52-54-00-c1-00-02.ipxe"}},
		{name: "bios-local", fw: qemu.BIOS, mac: "52:54:00:c1:00:03",
			markers: []string{qemu.LocalDiskMarker}},
		{name: "uefi-local", fw: qemu.UEFI, mac: "52:54:00:c1:00:04",
			markers: []string{"NBP filename is ipxe.efi", "booting local disk"}},
	}
	for _, m := range machines {
		if m.task {
			admin(t, lan.NS, token, "POST", "/api/tasks", fmt.Sprintf(`{"mac":%q,"image":"lab"}`, m.mac))
		}
	}
	// Two machines at a time: the CI runner has two cores.
	slots := make(chan struct{}, 2)
	t.Run("machines", func(t *testing.T) {
		for _, m := range machines {
			t.Run(m.name, func(t *testing.T) {
				t.Parallel()
				slots <- struct{}{}
				defer func() { <-slots }()
				if m.task {
					m.markers = append(m.markers, qemu.InitMarker)
				}
				disk := filepath.Join(t.TempDir(), "disk.img")
				if err := qemu.WriteLocalDisk(disk, 8<<20); err != nil {
					t.Fatal(err)
				}
				var console syncBuffer
				vm, err := qemu.Config{Name: m.name, Firmware: m.fw, NetNS: lan.NS.Name, Tap: lan.AddTap(t), MAC: m.mac,
					BootNetwork: true, Disks: []qemu.Disk{{Path: disk}}, Timeout: 5 * time.Minute, Console: &console,
				}.Start(ctx, imager.TestLogger(t))
				if err != nil {
					t.Fatal(err)
				}
				defer vm.Kill()
				for _, marker := range m.markers {
					if _, err := vm.Expect(marker, 3*time.Minute); err != nil {
						t.Fatalf("%v\nreproduce: %s\nconsole:\n%s", err, vm.CommandLine(), console.String())
					}
				}
				if m.task {
					line, err := vm.Expect("pxeswarm-test: cmdline", 30*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					if !strings.Contains(line, "pxeswarm.server="+serverURL) {
						t.Errorf("kernel command line %q does not carry pxeswarm.server=%s", line, serverURL)
					}
					if err := vm.Wait(); err != nil {
						t.Errorf("Wait() = %v, want the marker init to power off", err)
					}
				}
			})
		}
	})

	// The server saw it all: tasks of the booted machines moved on, the
	// others got no task, and the UEFI machine fetched ipxe.efi over TFTP.
	var tasks []pxe.Task
	if err := json.Unmarshal([]byte(admin(t, lan.NS, token, "GET", "/api/tasks", "")), &tasks); err != nil {
		t.Fatal(err)
	}
	state2 := map[string]pxe.TaskState{}
	for _, task := range tasks {
		state2[task.MAC] = task.State
	}
	for _, m := range machines {
		got, has := state2[m.mac]
		switch {
		case m.task && got != pxe.TaskBooting:
			t.Errorf("task of %s is %q, want %q (the script handed out our kernel)", m.name, got, pxe.TaskBooting)
		case !m.task && has:
			t.Errorf("%s has a task (%q), want none", m.name, got)
		}
	}
}
