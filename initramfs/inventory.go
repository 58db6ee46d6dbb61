package initramfs

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// The machine's inventory, read from sysfs, procfs and efivarfs only
// (no dmidecode, lspci or ethtool in the initramfs). Every reader takes
// its root, so tests run it on a fake tree. Nothing here fails: what
// cannot be read stays empty.

// DefaultProc is where procfs is mounted.
const DefaultProc = "/proc"

// collectInventory reads the machine below sys (the sysfs mount, "/sys"),
// proc (the procfs mount, "/proc") and efivars (where efivarfs is
// mounted; "-" or "" reads no Secure Boot state), clipped to the
// protocol's bounds.
func collectInventory(sys, proc, efivars string) protocol.Inventory {
	inv := protocol.Inventory{
		System:      readDMI(filepath.Join(sys, "class/dmi/id")),
		CPU:         readCPU(filepath.Join(proc, "cpuinfo")),
		MemoryBytes: readMemTotal(filepath.Join(proc, "meminfo")),
		Disks:       readDisks(sys),
		NICs:        readNICs(sys),
		Firmware:    protocol.FirmwareBIOS,
	}
	if _, err := os.Stat(filepath.Join(sys, "firmware/efi")); err == nil {
		inv.Firmware = protocol.FirmwareUEFI
		if efivars != "" && efivars != "-" {
			inv.SecureBoot = secureBoot(efivars)
		}
	}
	inv.Fit()
	return inv
}

// secureBoot reads the Secure Boot state from efivarfs mounted at
// efivars (partition.DefaultEFIVars on the machine): SecureBootEnabled,
// SecureBootDisabled, or "" when the variable is missing or unreadable
// (legacy BIOS, efivarfs not mounted). An efivarfs file is 4 bytes of
// attributes, then the value: SecureBoot's is one byte, 1 when the
// firmware enforces signatures (ReadSecureBoot).
func secureBoot(efivars string) string {
	switch st, err := ReadSecureBoot(efivars); {
	case err != nil:
		return ""
	case st == SecureBootOn:
		return protocol.SecureBootEnabled
	case st == SecureBootOff:
		return protocol.SecureBootDisabled
	}
	return ""
}

// readText is a sysfs attribute without its newline and padding; "" if
// it cannot be read.
func readText(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 4096 {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readNumber(path string) int64 {
	n, err := strconv.ParseInt(readText(path), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// dmiPlaceholders are what board makers leave in DMI fields they did not
// fill; the inventory shows them as empty.
var dmiPlaceholders = []string{
	"to be filled by o.e.m.", "default string", "system serial number", "system product name",
	"system manufacturer", "not specified", "not applicable", "none", "n/a", "0123456789", "oem", "o.e.m.",
}

func readDMI(dir string) protocol.SystemInfo {
	get := func(name string) string {
		s := readText(filepath.Join(dir, name))
		for _, p := range dmiPlaceholders {
			if strings.EqualFold(s, p) {
				return ""
			}
		}
		return s
	}
	return protocol.SystemInfo{
		Vendor: get("sys_vendor"), Product: get("product_name"), Serial: get("product_serial"),
		BoardVendor: get("board_vendor"), BoardName: get("board_name"), BoardSerial: get("board_serial"),
		BIOSVendor: get("bios_vendor"), BIOSVersion: get("bios_version"), BIOSDate: get("bios_date"),
	}
}

// readCPU parses /proc/cpuinfo: the model of the first processor,
// logical CPUs (processor entries) and physical cores (distinct
// physical id and core id pairs; architectures without them count each
// logical CPU as a core).
func readCPU(path string) protocol.CPUInfo {
	var c protocol.CPUInfo
	f, err := os.Open(path)
	if err != nil {
		return c
	}
	defer f.Close()
	type core struct{ pkg, id string }
	cores := map[core]bool{}
	var cur core
	haveCore := false
	flush := func() {
		if haveCore {
			cores[cur] = true
		}
		cur, haveCore = core{}, false
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20) // x86 flags lines are long
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "processor":
			flush()
			c.Threads++
		case "physical id":
			cur.pkg = val
		case "core id":
			cur.id, haveCore = val, true
		// The model's name by architecture: x86 "model name", arm
		// "Processor" or "Hardware" (older kernels), powerpc "cpu",
		// mips "cpu model", riscv "uarch".
		case "model name", "Processor", "cpu model", "cpu", "uarch", "Hardware":
			if c.Model == "" && val != "" {
				c.Model = val
			}
		}
	}
	flush()
	c.Cores = len(cores)
	if c.Cores == 0 {
		c.Cores = c.Threads
	}
	return c
}

// readMemTotal is /proc/meminfo's MemTotal in bytes.
func readMemTotal(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte("MemTotal:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) == 2 && f[1] == "kB" {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil && n >= 0 && n < 1<<50 {
				return n << 10
			}
		}
	}
	return 0
}

// readDisks lists sys/block's disks that have a device behind them:
// loop, RAM, zram, device-mapper and md devices (below devices/virtual),
// NVMe multipath members and an eMMC's boot and RPMB areas
// (mmcblk0boot0, mmcblk0rpmb: parts of mmcblk0) are left out.
func readDisks(sys string) []protocol.DiskInfo {
	ents, err := os.ReadDir(filepath.Join(sys, "block"))
	if err != nil {
		return nil
	}
	var disks []protocol.DiskInfo
	for _, e := range ents {
		dir := filepath.Join(sys, "block", e.Name())
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			continue
		}
		if strings.Contains(real, "/devices/virtual/") || readNumber(filepath.Join(dir, "hidden")) == 1 {
			continue
		}
		if rest, ok := strings.CutPrefix(e.Name(), "mmcblk"); ok && strings.ContainsAny(rest, "br") {
			continue // mmcblkNbootM, mmcblkNrpmb
		}
		model := readText(filepath.Join(dir, "device/model"))
		if model == "" {
			model = readText(filepath.Join(dir, "device/name")) // MMC and SD cards
		}
		disks = append(disks, protocol.DiskInfo{
			Name:      e.Name(),
			Model:     model,
			SizeBytes: readNumber(filepath.Join(dir, "size")) * 512, // sysfs counts 512-byte sectors
			Bus:       diskBus(real),
		})
	}
	return disks
}

// diskBus names the bus of a disk from its resolved sysfs path, for
// example
//
//	/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda  → ata
//	/sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1           → nvme
//	/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda                         → virtio
//	/sys/devices/pci0000:00/0000:00:05.0/virtio2/host2/target2:0:0/2:0:0:0/block/sda → scsi
//
// The outermost bus a disk hangs off decides where it matters: a SATA or
// NVMe disk in a USB enclosure is "usb".
func diskBus(real string) string {
	parts := strings.Split(filepath.ToSlash(real), "/")
	has := func(match func(string) bool) bool {
		for _, p := range parts {
			if match(p) {
				return true
			}
		}
		return false
	}
	numbered := func(prefix string) func(string) bool {
		return func(p string) bool {
			rest, ok := strings.CutPrefix(p, prefix)
			return ok && rest != "" && strings.Trim(rest, "0123456789") == ""
		}
	}
	is := func(name string) func(string) bool { return func(p string) bool { return p == name } }
	switch {
	case has(numbered("usb")):
		return protocol.BusUSB
	case has(is("nvme")):
		return protocol.BusNVMe
	case has(is("mmc_host")):
		return protocol.BusMMC
	case has(numbered("ata")):
		return protocol.BusATA
	case has(numbered("host")) && has(func(p string) bool { return strings.HasPrefix(p, "target") }):
		return protocol.BusSCSI
	case has(numbered("virtio")):
		return protocol.BusVirtio
	}
	return ""
}

// readNICs lists sys/class/net's interfaces that have a device behind
// them (not lo, bridges, bonds, veths or tunnels): the driver's name, the
// address and the link speed (0 while the link is down or unknown).
func readNICs(sys string) []protocol.NICInfo {
	dir := filepath.Join(sys, "class/net")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var nics []protocol.NICInfo
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(p, "device")); err != nil {
			continue
		}
		n := protocol.NICInfo{Name: e.Name(), MAC: readText(filepath.Join(p, "address"))}
		if drv, err := os.Readlink(filepath.Join(p, "device/driver")); err == nil {
			n.Driver = filepath.Base(drv)
		}
		if s := readNumber(filepath.Join(p, "speed")); s > 0 && s < 1<<31 {
			n.SpeedMbps = int(s)
		}
		nics = append(nics, n)
	}
	return nics
}
