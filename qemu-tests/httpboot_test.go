package qemutests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// TestUEFIHTTPBoot: OVMF boots over HTTP. TFTP is off, so its PXE entry
// fails and the firmware's HTTP boot entry asks DHCP as an HTTPClient
// (architecture 16); pxeswarm's reply carries the URL of the UEFI loader
// (iPXE here: plain OVMF, no Secure Boot), which the firmware downloads
// over HTTP and runs; iPXE gets its script and boots our kernel and
// initramfs, whose init shows the command line names the server.
func TestUEFIHTTPBoot(t *testing.T) {
	env := startServe(t, "http", "full", "--tftp-listen", "off")
	const mac = "52:54:00:c9:00:01"
	admin(t, env.lan.NS, env.token, "POST", "/api/tasks", fmt.Sprintf(`{"mac":%q,"image":"lab"}`, mac))
	disk := t.TempDir() + "/disk.img"
	if err := qemu.WriteLocalDisk(disk, 8<<20); err != nil {
		t.Fatal(err)
	}
	var console testlog.Buffer
	vm, err := qemu.Config{Name: "http-boot", Firmware: qemu.UEFI, NetNS: env.lan.NS.Name, Tap: env.lan.AddTap(t), MAC: mac,
		BootNetwork: true, Disks: []qemu.Disk{{Path: disk}}, Timeout: 6 * time.Minute, Console: &console,
	}.Boot(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	for _, m := range []string{"Start HTTP Boot over IPv4", "URI: " + serverURL + "/boot/ipxe.efi", "/boot/52-54-00-c9-00-01.ipxe", qemu.InitMarker} {
		if _, err := vm.Expect(m, 4*time.Minute); err != nil {
			t.Fatalf("%v\nreproduce: %s\nconsole:\n%s", err, vm.CommandLine(), console.String())
		}
	}
	line, err := vm.Expect("pxeswarm-test: cmdline", 30*time.Second)
	if err != nil || !strings.Contains(line, "pxeswarm.server="+serverURL) {
		t.Errorf("kernel command line %q (%v), want pxeswarm.server=%s", line, err, serverURL)
	}
	if !serverLogHas(env.log.String(), "dhcp: reply", "mac="+mac, "boot="+serverURL+"/boot/ipxe.efi", "arch=16") {
		t.Errorf("server log shows no HTTP boot reply to %s", mac)
	}
	if !serverLogHas(env.log.String(), "http: boot file", "file=iPXE") {
		t.Errorf("server log shows no iPXE sent over HTTP")
	}
}
