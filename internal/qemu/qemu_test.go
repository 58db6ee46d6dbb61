package qemu_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	. "github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// TestDirectBoot boots Debian's kernel with the marker initramfs: the
// harness sees markers in order and the machine powers itself off.
func TestDirectBoot(t *testing.T) {
	needs.Tool(t, "qemu-system-x86_64", "/boot/vmlinuz-*")
	kernel, err := build.NewestKernel(build.DefaultBoot)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	initrd, err := BuildMarkerInitramfs(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	vm, err := Config{Name: "direct", Kernel: kernel, Initramfs: initrd,
		Append: "console=ttyS0 panic=-1 quiet pxeswarm.test=yes", Timeout: 2 * time.Minute}.Boot(ctx, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	if _, err := vm.Expect(InitMarker, time.Minute); err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, vm.Console())
	}
	line, err := vm.Expect("pxeswarm-test: cmdline", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "pxeswarm.test=yes") {
		t.Errorf("cmdline line = %q, want it to hold pxeswarm.test=yes", line)
	}
	if err := vm.Wait(); err != nil {
		t.Errorf("Wait() = %v, want a clean power-off", err)
	}
	// A marker that never comes fails fast once the machine is gone.
	if _, err := vm.Expect("never printed", 5*time.Second); err == nil {
		t.Error("Expect(never printed) = nil after exit, want an error")
	}
}

// devices returns the -device values of a command line.
func devices(args []string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-device" {
			out = append(out, args[i+1])
		}
	}
	return out
}

// TestArgsNICs: each NIC model becomes its QEMU device on the tap, with
// the MAC and the boot index; under OVMF only virtio-net loses its iPXE
// ROM (OVMF drives it itself), the others keep theirs (OVMF has no
// driver for them); a USB NIC sits on an xHCI controller and cannot be
// a PXE boot device.
func TestArgsNICs(t *testing.T) {
	// Args checks that the UEFI and Secure Boot firmware files exist.
	needs.Tool(t, OVMF, OVMFSecureCode)
	for _, tc := range []struct {
		nic  NIC
		fw   Firmware
		boot bool
		want []string
	}{
		{"", BIOS, true, []string{"virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,bootindex=1"}},
		{"", UEFI, true, []string{"virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,romfile=,bootindex=1"}},
		{VirtioNet, SecureBoot, false, []string{"virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,romfile="}},
		{E1000, UEFI, true, []string{"e1000,netdev=n0,mac=52:54:00:00:00:01,bootindex=1"}},
		{E1000E, BIOS, true, []string{"e1000e,netdev=n0,mac=52:54:00:00:00:01,bootindex=1"}},
		{RTL8139, BIOS, false, []string{"rtl8139,netdev=n0,mac=52:54:00:00:00:01"}},
		{VMXNET3, UEFI, true, []string{"vmxnet3,netdev=n0,mac=52:54:00:00:00:01,bootindex=1"}},
		{PCNet, BIOS, true, []string{"pcnet,netdev=n0,mac=52:54:00:00:00:01,bootindex=1"}},
		{USBNet, UEFI, false, []string{"qemu-xhci,id=xhci", "usb-net,netdev=n0,bus=xhci.0,mac=52:54:00:00:00:01"}},
	} {
		c := Config{Firmware: tc.fw, Tap: "tap0", MAC: "52:54:00:00:00:01", NIC: tc.nic, BootNetwork: tc.boot}
		if tc.fw == SecureBoot {
			c.Vars = "/tmp/vars.fd"
		}
		args, err := c.Args()
		if err != nil {
			t.Fatalf("%s on %s: %v", tc.nic, tc.fw, err)
		}
		if got := devices(args); !slices.Equal(got, tc.want) {
			t.Errorf("%s on %s: devices %q, want %q", tc.nic, tc.fw, got, tc.want)
		}
	}
	for _, c := range []Config{
		{Tap: "tap0", NIC: USBNet, BootNetwork: true},
		{Tap: "tap0", NIC: "ne2k_pci"},
	} {
		if _, err := c.Args(); err == nil {
			t.Errorf("NIC %s with BootNetwork %v: Args() = nil error, want one", c.NIC, c.BootNetwork)
		}
	}
}

// TestArgsDisks: each disk bus gets its controller once and its device
// on it, with serials and boot indexes (network first, then the disks
// in order; an SD card has none).
func TestArgsDisks(t *testing.T) {
	c := Config{BootNetwork: true, Disks: []Disk{
		{Path: "a.img"},
		{Path: "b.img", Bus: VirtioSCSI},
		{Path: "c.img", Bus: VirtioSCSI, Serial: "s2"},
		{Path: "d.img", Bus: AHCI},
		{Path: "e.img", Bus: AHCI},
		{Path: "f.img", Bus: NVMe},
		{Path: "g.img", Bus: MegaSAS},
		{Path: "h.img", Bus: LSI},
		{Path: "i.img", Bus: SD},
		{Path: "j.img", USB: true, BootIndex: 1},
	}}
	args, err := c.Args()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"virtio-blk-pci,drive=d0,bootindex=2",
		"virtio-scsi-pci,id=vscsi", "scsi-hd,bus=vscsi.0,drive=d1,bootindex=3",
		"scsi-hd,bus=vscsi.0,drive=d2,serial=s2,bootindex=4",
		"ich9-ahci,id=ahci", "ide-hd,bus=ahci.0,drive=d3,bootindex=5",
		"ide-hd,bus=ahci.1,drive=d4,bootindex=6",
		"nvme,drive=d5,serial=pxeswarm5,bootindex=7",
		"megasas,id=megasas", "scsi-hd,bus=megasas.0,drive=d6,bootindex=8",
		"lsi53c895a,id=lsi", "scsi-hd,bus=lsi.0,drive=d7,bootindex=9",
		"sdhci-pci,id=sdhci", "sd-card,drive=d8",
		"qemu-xhci,id=xhci", "usb-storage,bus=xhci.0,drive=d9,bootindex=1",
	}
	if got := devices(args); !slices.Equal(got, want) {
		t.Errorf("devices:\n got %q\nwant %q", got, want)
	}
	if !slices.Contains(args, "file=i.img,format=raw,if=none,id=d8") {
		t.Errorf("no -drive for the SD card in %q", args)
	}
	for _, bad := range [][]Disk{
		{{Path: "a", Bus: SD}, {Path: "b", Bus: SD}},
		{{Path: "a", Bus: SD, BootIndex: 1}},
		{{Path: "a", Bus: "floppy"}},
		{{Path: "a", Bus: NVMe, USB: true}},
		{{Path: "1", Bus: AHCI}, {Path: "2", Bus: AHCI}, {Path: "3", Bus: AHCI}, {Path: "4", Bus: AHCI}, {Path: "5", Bus: AHCI}, {Path: "6", Bus: AHCI}, {Path: "7", Bus: AHCI}},
	} {
		if _, err := (Config{Disks: bad}).Args(); err == nil {
			t.Errorf("disks %+v: Args() = nil error, want one", bad)
		}
	}
}
