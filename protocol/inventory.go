package protocol

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrBadInventory: an inventory's fields are invalid or over their
// bounds.
var ErrBadInventory = errors.New("bad inventory")

// Bounds of an [Inventory]. It comes from the network, inside a report
// (which the server reads up to its body limit, 64 KiB by default), so
// every string and list has a cap: at these, the inventory's JSON stays
// under MaxInventoryJSON even when every character needs escaping.
const (
	MaxInventoryText  = 64 // bytes of a model, vendor, serial or version
	MaxInventoryName  = 32 // bytes of a kernel name (sda, enp3s0) or driver
	MaxInventoryDisks = 16
	MaxInventoryNICs  = 16
	// MaxInventoryJSON bounds the JSON of an inventory that passes Check.
	MaxInventoryJSON = 24 << 10
)

// Firmware kinds (Inventory.Firmware).
const (
	FirmwareUEFI = "uefi"
	FirmwareBIOS = "bios" // legacy BIOS, or UEFI with a CSM boot
)

// Secure Boot states (Inventory.SecureBoot); "" means unknown (legacy
// BIOS, or efivarfs could not be read).
const (
	SecureBootEnabled  = "enabled"
	SecureBootDisabled = "disabled"
)

// Buses of a disk (DiskInfo.Bus), as the agent reads them from the
// disk's sysfs device path; "" means none of these.
const (
	BusNVMe   = "nvme"
	BusATA    = "ata" // SATA and PATA through libata
	BusVirtio = "virtio"
	BusUSB    = "usb"
	BusSCSI   = "scsi" // SAS, virtio-scsi and other SCSI hosts
	BusMMC    = "mmc"  // SD cards and eMMC
)

var (
	firmwares   = []string{"", FirmwareUEFI, FirmwareBIOS}
	secureBoots = []string{"", SecureBootEnabled, SecureBootDisabled}
	buses       = []string{"", BusNVMe, BusATA, BusVirtio, BusUSB, BusSCSI, BusMMC}
)

// Inventory is what the agent found on its machine: the DMI identity,
// CPU, memory, disks, network interfaces and firmware. The agent sends
// it with its first report that carries the task's report token; the
// server keeps the latest with the machine. Empty fields are what the
// machine did not say (a virtual machine has no serial, a virtio disk no
// model).
type Inventory struct {
	System SystemInfo `json:"system"`
	CPU    CPUInfo    `json:"cpu"`
	// MemoryBytes is the kernel's MemTotal: a little less than the
	// installed RAM (the kernel and firmware keep some).
	MemoryBytes int64      `json:"memory_bytes,omitempty"`
	Disks       []DiskInfo `json:"disks,omitempty"`
	NICs        []NICInfo  `json:"nics,omitempty"`
	Firmware    string     `json:"firmware,omitempty"`    // FirmwareUEFI or FirmwareBIOS
	SecureBoot  string     `json:"secure_boot,omitempty"` // SecureBootEnabled, SecureBootDisabled or "" (unknown)
}

// SystemInfo is the machine's DMI (SMBIOS) identity, as the kernel shows
// it in /sys/class/dmi/id.
type SystemInfo struct {
	Vendor      string `json:"vendor,omitempty"`  // sys_vendor
	Product     string `json:"product,omitempty"` // product_name: the model
	Serial      string `json:"serial,omitempty"`  // product_serial
	BoardVendor string `json:"board_vendor,omitempty"`
	BoardName   string `json:"board_name,omitempty"`
	BoardSerial string `json:"board_serial,omitempty"`
	BIOSVendor  string `json:"bios_vendor,omitempty"`
	BIOSVersion string `json:"bios_version,omitempty"`
	BIOSDate    string `json:"bios_date,omitempty"`
}

// CPUInfo is the processor, from /proc/cpuinfo.
type CPUInfo struct {
	Model   string `json:"model,omitempty"`   // "model name"
	Cores   int    `json:"cores,omitempty"`   // physical cores, all sockets
	Threads int    `json:"threads,omitempty"` // logical CPUs
}

// DiskInfo is one disk.
type DiskInfo struct {
	Name      string `json:"name"` // kernel name: sda, nvme0n1, vda
	Model     string `json:"model,omitempty"`
	SizeBytes int64  `json:"size_bytes"`
	Bus       string `json:"bus,omitempty"` // a Bus constant, "" if unknown
}

// NICInfo is one network interface with a device behind it.
type NICInfo struct {
	Name      string `json:"name"`             // kernel name: eth0, enp3s0
	Driver    string `json:"driver,omitempty"` // e1000e, virtio_net
	MAC       string `json:"mac,omitempty"`    // lower-case, colon-separated
	SpeedMbps int    `json:"speed_mbps,omitempty"`
}

// Upper bounds of the numbers: far above any real machine, low enough
// that sums and products in a console cannot overflow.
const (
	maxCPUs      = 1 << 16
	maxMemory    = 1 << 50 // 1 PiB
	maxDiskBytes = 1 << 60
	maxSpeedMbps = 10_000_000 // 10 Tb/s
)

// Check validates an inventory's fields and bounds; errors wrap
// ErrBadInventory. An inventory that passes has a JSON encoding of at
// most MaxInventoryJSON bytes.
func (inv *Inventory) Check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadInventory, fmt.Sprintf(format, args...))
	}
	text := func(what, s string, n int) error {
		if len(s) > n || !okText(s) {
			return bad("%s %q: at most %d bytes of printable UTF-8", what, Clip(s, 40), n)
		}
		return nil
	}
	s := inv.System
	for _, f := range []struct{ name, v string }{
		{"vendor", s.Vendor}, {"product", s.Product}, {"serial", s.Serial},
		{"board_vendor", s.BoardVendor}, {"board_name", s.BoardName}, {"board_serial", s.BoardSerial},
		{"bios_vendor", s.BIOSVendor}, {"bios_version", s.BIOSVersion}, {"bios_date", s.BIOSDate},
		{"cpu model", inv.CPU.Model},
	} {
		if err := text(f.name, f.v, MaxInventoryText); err != nil {
			return err
		}
	}
	if inv.CPU.Cores < 0 || inv.CPU.Cores > maxCPUs || inv.CPU.Threads < 0 || inv.CPU.Threads > maxCPUs {
		return bad("cpu cores %d, threads %d: want 0 to %d", inv.CPU.Cores, inv.CPU.Threads, maxCPUs)
	}
	if inv.MemoryBytes < 0 || inv.MemoryBytes > maxMemory {
		return bad("memory_bytes %d: want 0 to %d", inv.MemoryBytes, int64(maxMemory))
	}
	if len(inv.Disks) > MaxInventoryDisks {
		return bad("%d disks: at most %d", len(inv.Disks), MaxInventoryDisks)
	}
	for i, d := range inv.Disks {
		if d.Name == "" {
			return bad("disk %d has no name", i)
		}
		if err := text(fmt.Sprintf("disk %d name", i), d.Name, MaxInventoryName); err != nil {
			return err
		}
		if err := text(fmt.Sprintf("disk %d model", i), d.Model, MaxInventoryText); err != nil {
			return err
		}
		if d.SizeBytes < 0 || d.SizeBytes > maxDiskBytes {
			return bad("disk %d size_bytes %d: want 0 to %d", i, d.SizeBytes, int64(maxDiskBytes))
		}
		if !slices.Contains(buses, d.Bus) {
			return bad("disk %d bus %q: want one of %s or empty", i, Clip(d.Bus, 20), strings.Join(buses[1:], ", "))
		}
	}
	if len(inv.NICs) > MaxInventoryNICs {
		return bad("%d nics: at most %d", len(inv.NICs), MaxInventoryNICs)
	}
	for i, n := range inv.NICs {
		if n.Name == "" {
			return bad("nic %d has no name", i)
		}
		if err := text(fmt.Sprintf("nic %d name", i), n.Name, MaxInventoryName); err != nil {
			return err
		}
		if err := text(fmt.Sprintf("nic %d driver", i), n.Driver, MaxInventoryName); err != nil {
			return err
		}
		if n.MAC != "" && !hwAddr(n.MAC) {
			return bad("nic %d mac %q: want lower-case hex octets separated by colons (at most 20)", i, Clip(n.MAC, 70))
		}
		if n.SpeedMbps < 0 || n.SpeedMbps > maxSpeedMbps {
			return bad("nic %d speed_mbps %d: want 0 to %d", i, n.SpeedMbps, maxSpeedMbps)
		}
	}
	if !slices.Contains(firmwares, inv.Firmware) {
		return bad("firmware %q: want uefi, bios or empty", Clip(inv.Firmware, 20))
	}
	if !slices.Contains(secureBoots, inv.SecureBoot) {
		return bad("secure_boot %q: want enabled, disabled or empty", Clip(inv.SecureBoot, 20))
	}
	return nil
}

// Fit clips inv to what Check accepts, for the agent before it sends
// what it read from the machine: strings lose control characters,
// invalid UTF-8 and surrounding spaces and are cut to their bound, lists
// are cut to theirs (it returns how many disks and NICs it dropped), and
// numbers and names out of range become zero or empty.
func (inv *Inventory) Fit() (droppedDisks, droppedNICs int) {
	s := &inv.System
	for _, p := range []*string{&s.Vendor, &s.Product, &s.Serial, &s.BoardVendor, &s.BoardName, &s.BoardSerial,
		&s.BIOSVendor, &s.BIOSVersion, &s.BIOSDate, &inv.CPU.Model} {
		*p = fitText(*p, MaxInventoryText)
	}
	if inv.CPU.Cores < 0 || inv.CPU.Cores > maxCPUs {
		inv.CPU.Cores = 0
	}
	if inv.CPU.Threads < 0 || inv.CPU.Threads > maxCPUs {
		inv.CPU.Threads = 0
	}
	if inv.MemoryBytes < 0 || inv.MemoryBytes > maxMemory {
		inv.MemoryBytes = 0
	}
	disks := inv.Disks[:0]
	for _, d := range inv.Disks {
		if d.Name = fitText(d.Name, MaxInventoryName); d.Name == "" {
			continue
		}
		d.Model = fitText(d.Model, MaxInventoryText)
		if d.SizeBytes < 0 || d.SizeBytes > maxDiskBytes {
			d.SizeBytes = 0
		}
		if !slices.Contains(buses, d.Bus) {
			d.Bus = ""
		}
		disks = append(disks, d)
	}
	droppedDisks = len(inv.Disks) - min(len(disks), MaxInventoryDisks)
	inv.Disks = disks[:min(len(disks), MaxInventoryDisks)]
	nics := inv.NICs[:0]
	for _, n := range inv.NICs {
		if n.Name = fitText(n.Name, MaxInventoryName); n.Name == "" {
			continue
		}
		n.Driver = fitText(n.Driver, MaxInventoryName)
		if n.MAC = strings.ToLower(strings.TrimSpace(n.MAC)); !hwAddr(n.MAC) {
			n.MAC = ""
		}
		if n.SpeedMbps < 0 || n.SpeedMbps > maxSpeedMbps {
			n.SpeedMbps = 0
		}
		nics = append(nics, n)
	}
	droppedNICs = len(inv.NICs) - min(len(nics), MaxInventoryNICs)
	inv.NICs = nics[:min(len(nics), MaxInventoryNICs)]
	if !slices.Contains(firmwares, inv.Firmware) {
		inv.Firmware = ""
	}
	if !slices.Contains(secureBoots, inv.SecureBoot) {
		inv.SecureBoot = ""
	}
	if len(inv.Disks) == 0 {
		inv.Disks = nil
	}
	if len(inv.NICs) == 0 {
		inv.NICs = nil
	}
	return droppedDisks, droppedNICs
}

// okText: valid UTF-8 without control characters (C0, DEL, C1).
func okText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}

// fitText makes s pass okText and cuts it to at most n bytes on a rune
// boundary, without surrounding spaces (SCSI pads its model strings).
func fitText(s string, n int) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > n {
		cut := n // s[cut] starts a rune, so s[:cut] is whole runes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = strings.TrimSpace(s[:cut])
	}
	return s
}

// hwAddr: a link-layer address as the kernel prints it, 1 to 20
// lower-case hex octets separated by colons (Ethernet has 6, InfiniBand
// 20).
func hwAddr(s string) bool {
	if len(s) < 2 || len(s) > 20*3-1 || (len(s)+1)%3 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i%3 == 2 {
			if c != ':' {
				return false
			}
		} else if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
