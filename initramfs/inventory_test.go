package initramfs

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// fakeTree builds files and symbolic links below root: a value ending in
// "@" names a link target (relative to the link's folder, as sysfs has
// them), anything else is a file's content.
func fakeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, v := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutSuffix(v, "@"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(v), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// cpuinfo is /proc/cpuinfo of an x86 machine with packages × cores ×
// threads logical CPUs.
func cpuinfo(model string, packages, cores, threads int) string {
	var b strings.Builder
	n := 0
	for p := range packages {
		for c := range cores {
			for range threads {
				b.WriteString("processor\t: " + strconv.Itoa(n) + "\nvendor_id\t: GenuineIntel\nmodel name\t: " + model +
					"\nphysical id\t: " + strconv.Itoa(p) + "\ncore id\t\t: " + strconv.Itoa(c*4) + "\nflags\t\t: " + strings.Repeat("fpu ", 100) + "\n\n")
				n++
			}
		}
	}
	return b.String()
}

// TestCollectInventoryFake: a fake machine's sysfs, procfs and efivarfs
// read back as the inventory they describe, each disk's bus named from
// its device path, virtual disks and interfaces left out.
func TestCollectInventoryFake(t *testing.T) {
	root := t.TempDir()
	sys, proc, efivars := filepath.Join(root, "sys"), filepath.Join(root, "proc"), filepath.Join(root, "efivars")
	pci := "devices/pci0000:00/"
	fakeTree(t, sys, map[string]string{
		"class/dmi/id/sys_vendor":     "LENOVO\n",
		"class/dmi/id/product_name":   "10QNS00N00\n",
		"class/dmi/id/product_serial": "PC1ABCDE\n",
		"class/dmi/id/board_vendor":   "LENOVO\n",
		"class/dmi/id/board_name":     "3136\n",
		"class/dmi/id/board_serial":   "Default string\n", // a placeholder: left out
		"class/dmi/id/bios_vendor":    "LENOVO\n",
		"class/dmi/id/bios_version":   "M1UKT4BA\n",
		"class/dmi/id/bios_date":      "11/18/2024\n",
		// NVMe: the model is the controller's.
		pci + "0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1/size":   "500118192\n",
		pci + "0000:00:1d.0/0000:3d:00.0/nvme/nvme0/model":          "SAMSUNG MZVLB256HAHQ-000L7              \n",
		pci + "0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1/device": "../../nvme0@",
		"block/nvme0n1": "../" + pci + "0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1@",
		// SATA through libata.
		pci + "0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda/size":   "1953525168\n",
		pci + "0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/model":            "WDC WD10EZEX-08W\n",
		pci + "0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda/device": "../../../0:0:0:0@",
		"block/sda": "../" + pci + "0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda@",
		// virtio-blk: no model.
		pci + "0000:00:04.0/virtio1/block/vda/size": "67108864\n",
		"block/vda": "../" + pci + "0000:00:04.0/virtio1/block/vda@",
		// virtio-scsi: a SCSI disk on a virtio transport.
		pci + "0000:00:05.0/virtio2/host2/target2:0:0/2:0:0:0/block/sdc/size":   "2048\n",
		pci + "0000:00:05.0/virtio2/host2/target2:0:0/2:0:0:0/model":            "QEMU HARDDISK   \n",
		pci + "0000:00:05.0/virtio2/host2/target2:0:0/2:0:0:0/block/sdc/device": "../../../2:0:0:0@",
		"block/sdc": "../" + pci + "0000:00:05.0/virtio2/host2/target2:0:0/2:0:0:0/block/sdc@",
		// A USB stick: USB wins over the SCSI host below it.
		pci + "0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb/size":   "30031872\n",
		pci + "0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/model":            "Ultra Fit       \n",
		pci + "0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb/device": "../../../6:0:0:0@",
		"block/sdb": "../" + pci + "0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb@",
		// An SD card: the model is the card's name.
		"devices/platform/soc/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0/size":   "62333952\n",
		"devices/platform/soc/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/name":                 "SC32G\n",
		"devices/platform/soc/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0/device": "../../../mmc0:aaaa@",
		"block/mmcblk0": "../devices/platform/soc/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0@",
		// The card's boot area: part of mmcblk0, left out.
		"devices/platform/soc/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0boot0/size": "8192\n",
		"block/mmcblk0boot0": "../devices/platform/soc/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0boot0@",
		// Virtual: left out.
		"devices/virtual/block/loop0/size": "1024\n",
		"block/loop0":                      "../devices/virtual/block/loop0@",
		"devices/virtual/block/zram0/size": "0\n",
		"block/zram0":                      "../devices/virtual/block/zram0@",
		// NICs: one up at 1 Gb/s, one down (speed unreadable), and lo.
		pci + "0000:00:1f.6/net/eno1/address":         "e8:6a:64:01:02:03\n",
		pci + "0000:00:1f.6/net/eno1/speed":           "1000\n",
		pci + "0000:00:1f.6/net/eno1/device":          "../../../0000:00:1f.6@",
		pci + "0000:00:1f.6/driver":                   "../../../bus/pci/drivers/e1000e@",
		pci + "0000:00:03.0/virtio3/net/eth1/address": "52:54:00:12:34:56\n",
		pci + "0000:00:03.0/virtio3/net/eth1/speed":   "-1\n",
		pci + "0000:00:03.0/virtio3/net/eth1/device":  "../../../virtio3@",
		pci + "0000:00:03.0/virtio3/driver":           "../../../../bus/virtio/drivers/virtio_net@",
		"devices/virtual/net/lo/address":              "00:00:00:00:00:00\n",
		"class/net/eno1":                              "../../" + pci + "0000:00:1f.6/net/eno1@",
		"class/net/eth1":                              "../../" + pci + "0000:00:03.0/virtio3/net/eth1@",
		"class/net/lo":                                "../../devices/virtual/net/lo@",
		"firmware/efi/fw_platform_size":               "64\n",
	})
	fakeTree(t, proc, map[string]string{
		"cpuinfo": cpuinfo("Intel(R) Xeon(R) CPU E5-2630 v4 @ 2.20GHz", 2, 3, 2),
		"meminfo": "MemTotal:       16303504 kB\nMemFree:         1186372 kB\n",
	})
	fakeTree(t, efivars, map[string]string{secureBootVar: "\x06\x00\x00\x00\x01"})

	got := collectInventory(sys, proc, efivars)
	want := protocol.Inventory{
		System: protocol.SystemInfo{Vendor: "LENOVO", Product: "10QNS00N00", Serial: "PC1ABCDE", BoardVendor: "LENOVO", BoardName: "3136",
			BIOSVendor: "LENOVO", BIOSVersion: "M1UKT4BA", BIOSDate: "11/18/2024"},
		CPU:         protocol.CPUInfo{Model: "Intel(R) Xeon(R) CPU E5-2630 v4 @ 2.20GHz", Cores: 6, Threads: 12},
		MemoryBytes: 16303504 << 10,
		Disks: []protocol.DiskInfo{
			{Name: "mmcblk0", Model: "SC32G", SizeBytes: 62333952 * 512, Bus: protocol.BusMMC},
			{Name: "nvme0n1", Model: "SAMSUNG MZVLB256HAHQ-000L7", SizeBytes: 500118192 * 512, Bus: protocol.BusNVMe},
			{Name: "sda", Model: "WDC WD10EZEX-08W", SizeBytes: 1953525168 * 512, Bus: protocol.BusATA},
			{Name: "sdb", Model: "Ultra Fit", SizeBytes: 30031872 * 512, Bus: protocol.BusUSB},
			{Name: "sdc", Model: "QEMU HARDDISK", SizeBytes: 2048 * 512, Bus: protocol.BusSCSI},
			{Name: "vda", SizeBytes: 67108864 * 512, Bus: protocol.BusVirtio},
		},
		NICs: []protocol.NICInfo{
			{Name: "eno1", Driver: "e1000e", MAC: "e8:6a:64:01:02:03", SpeedMbps: 1000},
			{Name: "eth1", Driver: "virtio_net", MAC: "52:54:00:12:34:56"},
		},
		Firmware:   protocol.FirmwareUEFI,
		SecureBoot: protocol.SecureBootEnabled,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("collectInventory(fake) (-want +got):\n%s", diff)
	}
	if err := got.Check(); err != nil {
		t.Errorf("the inventory fails its own Check: %v", err)
	}

	// Legacy BIOS: no firmware/efi, so no Secure Boot state even if a
	// stale efivars folder is handed in.
	os.RemoveAll(filepath.Join(sys, "firmware"))
	got = collectInventory(sys, proc, efivars)
	if got.Firmware != protocol.FirmwareBIOS || got.SecureBoot != "" {
		t.Errorf("without firmware/efi: firmware %q secure_boot %q, want bios and unknown", got.Firmware, got.SecureBoot)
	}
	// An empty tree: nothing, and no panic.
	if got := collectInventory(filepath.Join(root, "none"), filepath.Join(root, "none"), "-"); got.Disks != nil || got.NICs != nil || got.CPU.Threads != 0 || got.MemoryBytes != 0 {
		t.Errorf("collectInventory(empty) = %+v, want nothing found", got)
	}
}

func TestSecureBoot(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"enabled", "\x06\x00\x00\x00\x01", protocol.SecureBootEnabled},
		{"disabled", "\x06\x00\x00\x00\x00", protocol.SecureBootDisabled},
		{"short", "\x06\x00\x00\x00", ""},
		{"odd value", "\x06\x00\x00\x00\x07", ""},
		{"missing", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.content != "" {
				fakeTree(t, dir, map[string]string{secureBootVar: tc.content})
			}
			if got := secureBoot(dir); got != tc.want {
				t.Errorf("secureBoot(%q) = %q, want %q", tc.content, got, tc.want)
			}
		})
	}
}

func TestCPUSingleThreadArch(t *testing.T) {
	// arm64 has no model name, physical id or core id: each CPU counts
	// as a core and the model stays empty rather than wrong.
	dir := t.TempDir()
	fakeTree(t, dir, map[string]string{"cpuinfo": "processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\nprocessor\t: 1\nBogoMIPS\t: 108.00\n\n"})
	if got, want := readCPU(filepath.Join(dir, "cpuinfo")), (protocol.CPUInfo{Cores: 2, Threads: 2}); got != want {
		t.Errorf("readCPU(arm64) = %+v, want %+v", got, want)
	}
}

// TestCollectInventoryThisMachine reads the real /sys and /proc of the
// machine running the test and checks them against what lscpu, free,
// lsblk and ip say.
func TestCollectInventoryThisMachine(t *testing.T) {
	needs.Tool(t, "lscpu", "free", "lsblk", "ip")
	inv := collectInventory("/sys", "/proc", "/sys/firmware/efi/efivars")
	js, _ := json.MarshalIndent(inv, "", "  ")
	t.Logf("this machine:\n%s", js)
	if err := inv.Check(); err != nil {
		t.Errorf("Check() = %v", err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).Output()
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(args, " "), err)
		}
		return out
	}

	// CPU.
	var lscpu struct {
		Lscpu []struct{ Field, Data string }
	}
	if err := json.Unmarshal(run("lscpu", "-J"), &lscpu); err != nil {
		t.Fatal(err)
	}
	field := map[string]string{}
	for _, f := range lscpu.Lscpu {
		field[strings.TrimSuffix(f.Field, ":")] = f.Data
	}
	if m := field["Model name"]; m != "" && inv.CPU.Model != m {
		t.Errorf("cpu model %q, lscpu says %q", inv.CPU.Model, m)
	}
	if n, _ := strconv.Atoi(field["CPU(s)"]); inv.CPU.Threads != n {
		t.Errorf("cpu threads %d, lscpu says CPU(s) %d", inv.CPU.Threads, n)
	}
	perSocket, _ := strconv.Atoi(field["Core(s) per socket"])
	sockets, _ := strconv.Atoi(field["Socket(s)"])
	if perSocket > 0 && sockets > 0 && inv.CPU.Cores != perSocket*sockets {
		t.Errorf("cpu cores %d, lscpu says %d per socket × %d sockets", inv.CPU.Cores, perSocket, sockets)
	}

	// Memory: free's total is MemTotal.
	for _, line := range strings.Split(string(run("free", "-b")), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Mem:" {
			if n, _ := strconv.ParseInt(f[1], 10, 64); inv.MemoryBytes != n {
				t.Errorf("memory %d bytes, free -b says %d", inv.MemoryBytes, n)
			}
		}
	}

	// Disks: every one lsblk lists with a device behind it, same size,
	// model and transport.
	var lsblk struct {
		Blockdevices []struct {
			Name  string
			Size  int64
			Model *string
			Tran  *string
		}
	}
	if err := json.Unmarshal(run("lsblk", "-J", "-b", "-d", "-o", "NAME,SIZE,MODEL,TRAN"), &lsblk); err != nil {
		t.Fatal(err)
	}
	got := map[string]protocol.DiskInfo{}
	for _, d := range inv.Disks {
		got[d.Name] = d
	}
	tranBus := map[string]string{"sata": protocol.BusATA, "ata": protocol.BusATA, "nvme": protocol.BusNVMe, "usb": protocol.BusUSB,
		"mmc": protocol.BusMMC, "sas": protocol.BusSCSI, "spi": protocol.BusSCSI, "fc": protocol.BusSCSI, "iscsi": protocol.BusSCSI}
	seen := 0
	for _, b := range lsblk.Blockdevices {
		real, err := filepath.EvalSymlinks("/sys/block/" + b.Name)
		if err != nil || strings.Contains(real, "/devices/virtual/") {
			if _, ok := got[b.Name]; ok {
				t.Errorf("disk %s is virtual (%s) but in the inventory", b.Name, real)
			}
			continue
		}
		d, ok := got[b.Name]
		if !ok {
			t.Errorf("lsblk lists %s (%s), the inventory does not", b.Name, real)
			continue
		}
		seen++
		if d.SizeBytes != b.Size {
			t.Errorf("disk %s: %d bytes, lsblk says %d", b.Name, d.SizeBytes, b.Size)
		}
		if b.Model != nil && d.Model != strings.TrimSpace(*b.Model) {
			t.Errorf("disk %s: model %q, lsblk says %q", b.Name, d.Model, *b.Model)
		}
		if b.Tran != nil {
			if want, ok := tranBus[*b.Tran]; ok && d.Bus != want {
				t.Errorf("disk %s: bus %q, lsblk's transport %q means %q", b.Name, d.Bus, *b.Tran, want)
			}
		}
	}
	if seen != len(inv.Disks) {
		t.Errorf("the inventory has %d disks, lsblk %d of them", len(inv.Disks), seen)
	}

	// NICs: each one's address as ip shows it.
	var links []struct {
		Ifname, Address string
	}
	if err := json.Unmarshal(run("ip", "-j", "link"), &links); err != nil {
		t.Fatal(err)
	}
	addr := map[string]string{}
	for _, l := range links {
		addr[l.Ifname] = l.Address
	}
	for _, n := range inv.NICs {
		if a, ok := addr[n.Name]; !ok || a != n.MAC {
			t.Errorf("nic %s: mac %q, ip link says %q", n.Name, n.MAC, a)
		}
		if n.Driver == "" {
			t.Errorf("nic %s has a device but no driver", n.Name)
		}
	}

	// Firmware.
	_, err := os.Stat("/sys/firmware/efi")
	if want := map[bool]string{true: protocol.FirmwareUEFI, false: protocol.FirmwareBIOS}[err == nil]; inv.Firmware != want {
		t.Errorf("firmware %q, want %q", inv.Firmware, want)
	}
}
