// Package qemutests boots real firmware against a real `pxeswarm serve`:
// QEMU machines on taps in a test bridge, in a network namespace the test
// makes (198.18.0.0/15 only), with software emulation.
package qemutests

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/netns"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

const (
	serverAddr = "198.18.0.1"
	serverURL  = "http://198.18.0.1:8080"
)

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
	needs.Tool(t, "qemu-system-x86_64", "curl", qemu.OVMF, "/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/ipxe.efi", "/usr/lib/ipxe/qemu/pxe-virtio.rom",
		"/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "/boot/vmlinuz-*")
	kernel, err := build.NewestKernel(build.DefaultBoot)
	if err != nil {
		t.Fatal(err)
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

// admin calls the admin API from inside the namespace with curl and fails
// the test on any error.
func admin(t *testing.T, ns *netns.NS, token, method, path, body string) string {
	t.Helper()
	out, err := adminTry(ns, token, method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// adminTry is admin for callers that expect the server to be away at times.
func adminTry(ns *netns.NS, token, method, path, body string) (string, error) {
	args := []string{"-sS", "-X", method, "-H", "Authorization: Bearer " + token, "-H", "Content-Type: application/json", "-w", "\n%{http_code}"}
	if body != "" {
		args = append(args, "--data", body)
	}
	out, err := ns.Run(15*time.Second, "curl", append(args, serverURL+path)...)
	if err != nil {
		return "", fmt.Errorf("curl %s %s: %v\n%s", method, path, err, out)
	}
	out = strings.TrimSpace(out)
	i := strings.LastIndexByte(out, '\n')
	if code := out[i+1:]; !strings.HasPrefix(code, "2") {
		return "", fmt.Errorf("%s %s = HTTP %s: %s", method, path, code, out[:max(i, 0)])
	}
	return out[:max(i, 0)], nil
}

// bootEnv is a test LAN with `pxeswarm serve` in it.
type bootEnv struct {
	lan   *netns.LAN
	token string
	log   *testlog.Buffer
}

// startServe builds pxeswarm and the marker initramfs and runs `pxeswarm
// serve` in a new LAN namespace with the given DHCP mode. UEFI machines
// get iPXE unless extra (more serve flags) says otherwise.
func startServe(t *testing.T, tag, mode string, extra ...string) *bootEnv {
	t.Helper()
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
	env := &bootEnv{lan: netns.NewLAN(t, tag, netip.MustParsePrefix(serverAddr+"/24")), log: &testlog.Buffer{}}
	state := filepath.Join(work, "state")
	args := []string{"serve", "--image", img, "--interface", env.lan.Bridge, "--dhcp", mode,
		"--state-dir", state, "--kernel", kernel, "--initramfs", initrd,
		"--cmdline", "console=ttyS0 panic=-1", "--uefi-loader", "ipxe"}
	serve := env.lan.NS.Command(ctx, bin, append(args, extra...)...)
	serve.Stdout, serve.Stderr = env.log, env.log
	exited := netns.Start(t, serve)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", env.log.String())
		}
	})
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(env.log.String(), pxe.Ready) {
		select {
		case err := <-exited:
			t.Fatalf("pxeswarm serve exited before ready: %v\n%s", err, env.log.String())
		case <-deadline:
			t.Fatalf("pxeswarm serve not ready in 2m:\n%s", env.log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	tokenBytes, err := os.ReadFile(filepath.Join(state, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	env.token = strings.TrimSpace(string(tokenBytes))
	return env
}

type machine struct {
	name    string
	fw      qemu.Firmware
	mac     string
	task    bool
	markers []string // in order; a machine with a task also waits for the init marker
	// testOS puts the test OS on the machine's disk (instead of a BIOS
	// boot sector) and waits for its marker last.
	testOS bool
}

// testOSDisk builds the test OS and lays it out on a raw disk the way the
// agent would; it returns the disk and the marker the booted OS prints.
func testOSDisk(t *testing.T, dir string) (string, string) {
	t.Helper()
	tos, err := build.TestOSConfig{Dir: dir, ESPSize: 40 << 20, DataSize: 1 << 20}.Build(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	if err := tos.WriteDisk(disk, 64<<20); err != nil {
		t.Fatal(err)
	}
	return disk, build.NewSystemMarker + " " + tos.Digest
}

// boot gives the machines with task=true a task, boots all of them (two at
// a time: CI has two cores) and checks what each one printed, then that
// the server handed exactly those machines the agent script and left
// their tasks pending (the marker init sends no report; fetching a
// script changes nothing).
func (env *bootEnv) boot(t *testing.T, machines []machine) {
	for _, m := range machines {
		if m.task {
			admin(t, env.lan.NS, env.token, "POST", "/api/tasks", fmt.Sprintf(`{"mac":%q,"image":"lab"}`, m.mac))
		}
	}
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
				if m.testOS {
					var marker string
					disk, marker = testOSDisk(t, t.TempDir())
					m.markers = append(m.markers, marker)
				} else if err := qemu.WriteLocalDisk(disk, 8<<20); err != nil {
					t.Fatal(err)
				}
				var console testlog.Buffer
				vm, err := qemu.Config{Name: m.name, Firmware: m.fw, NetNS: env.lan.NS.Name, Tap: env.lan.AddTap(t), MAC: m.mac,
					BootNetwork: true, Disks: []qemu.Disk{{Path: disk}}, Timeout: 5 * time.Minute, Console: &console,
				}.Boot(context.Background(), testlog.New(t))
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

	var tasks []pxe.Task
	if err := json.Unmarshal([]byte(admin(t, env.lan.NS, env.token, "GET", "/api/tasks", "")), &tasks); err != nil {
		t.Fatal(err)
	}
	states := map[string]protocol.TaskState{}
	for _, task := range tasks {
		states[task.MAC] = task.State
	}
	for _, m := range machines {
		got, has := states[m.mac]
		served := false
		for _, line := range strings.Split(env.log.String(), "\n") {
			served = served || strings.Contains(line, "http: agent script") && strings.Contains(line, " mac="+m.mac+" ")
		}
		switch {
		case m.task && (got != protocol.TaskPending || !served):
			t.Errorf("task of %s is %q (agent script in the server log: %v), want %q and the script handed out", m.name, got, served, protocol.TaskPending)
		case !m.task && served:
			t.Errorf("%s was handed the agent script without a task", m.name)
		case !m.task && has:
			t.Errorf("%s has a task (%q), want none", m.name, got)
		}
	}
}

// TestFirmwarePXEBoot boots SeaBIOS (with the NIC's iPXE ROM) and OVMF
// (with its own PXE, chaining our ipxe.efi over TFTP) against `pxeswarm
// serve` in full DHCP mode. A machine with a task loads our kernel and
// initramfs (the marker init shows the kernel command line carries the
// server URL); a machine without one boots its local disk: under SeaBIOS
// a boot sector prints its marker, under OVMF the test OS does.
func TestFirmwarePXEBoot(t *testing.T) {
	env := startServe(t, "fw", "full")
	env.boot(t, []machine{
		{name: "bios-task", fw: qemu.BIOS, mac: "52:54:00:c1:00:01", task: true},
		{name: "uefi-task", fw: qemu.UEFI, mac: "52:54:00:c1:00:02", task: true,
			markers: []string{"NBP filename is ipxe.efi", "NBP file downloaded successfully", "/boot/52-54-00-c1-00-02.ipxe"}},
		{name: "bios-local", fw: qemu.BIOS, mac: "52:54:00:c1:00:03",
			markers: []string{qemu.LocalDiskMarker}},
		// No task: the DHCP server offers no boot file, so OVMF does not
		// load iPXE and goes on to its disk.
		{name: "uefi-local", fw: qemu.UEFI, mac: "52:54:00:c1:00:04", testOS: true},
	})
	if !strings.Contains(env.log.String(), "dhcp: no task; no boot file") {
		t.Error("the server log does not show a machine refused a boot file")
	}
	// Full mode: the server handed out addresses from its pool (.100 and up).
	if !strings.Contains(env.log.String(), "yiaddr=198.18.0.1") {
		t.Errorf("server log shows no lease from the pool")
	}
}

func needDnsmasq(t *testing.T) {
	t.Helper()
	needs.Tool(t, "dnsmasq")
}

// schoolDHCP runs dnsmasq on its own host on lan as the school's existing
// DHCP server (198.18.0.50–90) and returns its lease file. extra are more
// dnsmasq options (the school's own boot settings).
func schoolDHCP(t *testing.T, lan *netns.LAN, extra ...string) string {
	t.Helper()
	school := lan.AddHost(t, "school", netip.MustParsePrefix("198.18.0.2/24"), nil)
	dir := t.TempDir()
	leases := filepath.Join(dir, "dnsmasq.leases")
	var dmLog testlog.Buffer
	args := []string{"--no-daemon", "--conf-file=/dev/null",
		"--port=0", "--interface=" + school.Link, "--bind-interfaces", "--dhcp-authoritative",
		"--dhcp-range=198.18.0.50,198.18.0.90,255.255.255.0,10m", "--dhcp-leasefile=" + leases,
		"--pid-file=" + filepath.Join(dir, "dnsmasq.pid"), "--user=root", "--log-dhcp", "--log-facility=-"}
	dm := school.Command(context.Background(), "dnsmasq", append(args, extra...)...)
	dm.Stdout, dm.Stderr = &dmLog, &dmLog
	netns.Start(t, dm)
	waitFor(t, "dnsmasq up", 10*time.Second, func() bool { return strings.Contains(dmLog.String(), "DHCP, IP range") })
	return leases
}

// TestFirmwarePXEBootProxy is the school network: dnsmasq on another host
// hands out addresses, pxeswarm runs in proxy mode beside it. OVMF gets its
// address from dnsmasq and ipxe.efi and then the script from pxeswarm;
// SeaBIOS's iPXE ROM likewise gets the script URL from the proxy. pxeswarm
// hands out no address (its DHCP tests check every packet; here the
// dnsmasq lease file must hold both machines).
func TestFirmwarePXEBootProxy(t *testing.T) {
	needDnsmasq(t)
	env := startServe(t, "fwp", "proxy")
	leases := schoolDHCP(t, env.lan)
	machines := []machine{
		{name: "bios-task", fw: qemu.BIOS, mac: "52:54:00:c2:00:01", task: true},
		{name: "uefi-task", fw: qemu.UEFI, mac: "52:54:00:c2:00:02", task: true,
			markers: []string{"NBP filename is ipxe.efi", "/boot/52-54-00-c2-00-02.ipxe"}},
	}
	env.boot(t, machines)
	b, _ := os.ReadFile(leases)
	for _, m := range machines {
		if !strings.Contains(string(b), m.mac+" 198.18.0.") {
			t.Errorf("dnsmasq leases %q lack %s: its address did not come from the school's server", b, m.mac)
		}
	}
	replies := 0
	for _, line := range strings.Split(env.log.String(), "\n") {
		if !strings.Contains(line, "dhcp: reply") {
			continue
		}
		replies++
		if !strings.Contains(line, "yiaddr=0.0.0.0") {
			t.Errorf("pxeswarm in proxy mode offered an address: %s", line)
		}
	}
	if replies == 0 {
		t.Error("pxeswarm in proxy mode logged no replies")
	}
}
