package qemutests

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/pxe"
)

func needSecureBoot(t *testing.T) {
	t.Helper()
	needs.Tool(t, qemu.OVMFSecureCode, qemu.OVMFMSVars, pxe.DefaultShim, pxe.DefaultGrub, build.DefaultDiskGrub)
}

// serverLogHas reports whether one line of the server log holds every
// part.
func serverLogHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// TestSecureBootRefusesUnsigned is the control for the Secure Boot
// tests: the same firmware (OVMF with Secure Boot on and Microsoft's keys)
// downloads Debian's iPXE, which is not signed, and refuses to run it, so
// the machine never asks for its iPXE script. It shows the firmware
// really enforces Secure Boot: a test through shim that passes proves the
// chain is signed.
func TestSecureBootRefusesUnsigned(t *testing.T) {
	needSecureBoot(t)
	env := startServe(t, "sbc", "full", "--uefi-loader", "ipxe")
	const mac = "52:54:00:c8:00:09"
	admin(t, env.lan.NS, env.token, "POST", "/api/tasks", fmt.Sprintf(`{"mac":%q,"image":"lab"}`, mac))
	vars, err := qemu.CopyVars(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	disk := t.TempDir() + "/disk.img"
	if err := qemu.WriteLocalDisk(disk, 8<<20); err != nil {
		t.Fatal(err)
	}
	var console testlog.Buffer
	vm, err := qemu.Config{Name: "secboot-ipxe", Firmware: qemu.SecureBoot, Vars: vars, NetNS: env.lan.NS.Name, Tap: env.lan.AddTap(t), MAC: mac,
		BootNetwork: true, Disks: []qemu.Disk{{Path: disk}}, Timeout: 4 * time.Minute, Console: &console,
	}.Boot(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	var line string
	for _, m := range []string{"NBP filename is ipxe.efi", "NBP file downloaded successfully", "BdsDxe: failed to load"} {
		if line, err = vm.Expect(m, 3*time.Minute); err != nil {
			t.Fatalf("%v\nreproduce: %s\nconsole:\n%s", err, vm.CommandLine(), console.String())
		}
	}
	if !strings.Contains(line, "UEFI PXEv4") || !strings.HasSuffix(line, "Access Denied") {
		t.Errorf("firmware line %q, want the PXE entry refused with Access Denied", line)
	}
	if !serverLogHas(env.log.String(), "tftp: sent", "file=ipxe.efi") {
		t.Errorf("the server log does not show ipxe.efi sent: the firmware refused nothing")
	}
	// Give a wrongly accepted iPXE time to ask for its script.
	time.Sleep(5 * time.Second)
	if serverLogHas(env.log.String(), "http: agent script", "mac="+mac) || strings.Contains(console.String(), "iPXE initialising") {
		t.Errorf("iPXE ran under Secure Boot:\n%s", console.String())
	}
}

// TestSecureBootPXE: a UEFI PC with Secure Boot on (OVMF with Microsoft's
// keys) PXE-boots Debian's shim (Microsoft-signed), which loads Debian's
// signed GRUB, which gets the machine's config from the server and loads
// Debian's signed kernel with our initramfs. The agent says Secure Boot is
// on and the kernel locked down, loads its (signed) drivers, images the
// disk and reboots; the disk matches the image; booted again without a
// task the firmware boots the disk, through the test OS's own shim and
// GRUB (its systemd-boot is unsigned and would be refused).
func TestSecureBootPXE(t *testing.T) {
	needSecureBoot(t)
	c := newClassroomOS(t, "sbf", "full", build.TestOSConfig{SecureBoot: true}, "--uefi-loader", "shim")
	v := c.newVM(t, "secboot", qemu.SecureBoot, "52:54:00:c8:00:01")
	m := c.start(t, v)
	expect(t, v, m, 3*time.Minute, "NBP filename is shimx64.efi")
	expect(t, v, m, 5*time.Minute, initramfs.MarkVersion)
	line := expect(t, v, m, time.Minute, initramfs.MarkSecureBoot)
	if !strings.Contains(line, initramfs.MarkSecureBoot+" on") || !strings.Contains(line, "lockdown=integrity") {
		t.Errorf("secure boot line %q, want on and lockdown=integrity; console:\n%s", line, v.console.String())
	}
	expect(t, v, m, 3*time.Minute, initramfs.MarkLease, initramfs.MarkPlan, initramfs.MarkTable, initramfs.MarkWriting)
	expect(t, v, m, 8*time.Minute, initramfs.MarkImageDone, initramfs.MarkReboot)
	if err := m.Wait(); err != nil {
		t.Errorf("QEMU after the agent's reboot: %v", err)
	}
	log := c.log.String()
	for _, want := range [][]string{
		{"tftp: sent", "file=shimx64.efi"}, {"tftp: sent", "file=grubx64.efi"}, {"grub: agent config", "mac=" + v.mac},
		{"tftp: sent", "file=/boot/vmlinuz"}, {"tftp: sent", "file=/boot/initramfs"},
	} {
		if !serverLogHas(log, want...) {
			t.Errorf("server log has no line with %q", want)
		}
	}
	if t.Failed() {
		return
	}
	c.checkDisk(t, v)
	v.console = testlog.Buffer{}
	m = c.start(t, v)
	expect(t, v, m, 4*time.Minute, build.NewSystemMarker+" "+c.tos.Digest)
}

// TestSecureBootPXEProxy is TestSecureBootPXE on the school network:
// dnsmasq on another host hands out the addresses, pxeswarm runs in proxy
// mode beside it. Debian's GRUB (2.06) ignores proxyDHCP offers: with
// proxy DHCP alone, shim still fetched GRUB from pxeswarm (shim takes the
// proxy offer when the school's ACK names no boot file) but GRUB then
// looked for its config on the school's server and stopped at its prompt
// (seen here). So the school's server names pxeswarm for x86-64 UEFI
// clients, options 66/67 (docs/SERVER.md), as dnsmasq does here; the
// proxy still gives the agent the server URL. Every UEFI machine then
// loads shim and GRUB; GRUB's config sends one without a task back to
// the firmware, which boots the disk: the second boot checks that.
func TestSecureBootPXEProxy(t *testing.T) {
	extendedTier(t)
	needSecureBoot(t)
	needDnsmasq(t)
	c := newClassroomOS(t, "sbp", "proxy", build.TestOSConfig{SecureBoot: true}, "--uefi-loader", "shim")
	leases := schoolDHCP(t, c.lan, "--dhcp-match=set:efi64,option:client-arch,7",
		"--dhcp-boot=tag:efi64,"+pxe.ShimName+",,"+serverAddr)
	v := c.newVM(t, "secboot-proxy", qemu.SecureBoot, "52:54:00:c8:00:02")
	m := c.start(t, v)
	expect(t, v, m, 3*time.Minute, "NBP filename is shimx64.efi")
	expect(t, v, m, 4*time.Minute, initramfs.MarkVersion)
	line := expect(t, v, m, time.Minute, initramfs.MarkSecureBoot)
	if !strings.Contains(line, initramfs.MarkSecureBoot+" on") {
		t.Errorf("secure boot line %q, want on", line)
	}
	line = expect(t, v, m, 3*time.Minute, initramfs.MarkLease)
	if !strings.Contains(line, "addr=198.18.0.") || !strings.Contains(line, "server="+serverURL) {
		t.Errorf("lease line %q: want an address from dnsmasq and the server from the proxy", line)
	}
	expect(t, v, m, 8*time.Minute, initramfs.MarkImageDone, initramfs.MarkReboot)
	m.Wait()
	c.checkDisk(t, v)
	if b, _ := os.ReadFile(leases); !strings.Contains(string(b), v.mac) {
		t.Errorf("dnsmasq leases %q lack %s", b, v.mac)
	}
	v.console = testlog.Buffer{}
	m = c.start(t, v)
	expect(t, v, m, 4*time.Minute, build.NewSystemMarker+" "+c.tos.Digest)
	if !serverLogHas(c.log.String(), "grub: no task; local disk", "mac="+v.mac) {
		t.Errorf("the second boot did not go through GRUB's no-task config")
	}
}
