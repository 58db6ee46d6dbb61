package partition

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

// DefaultBootLabel marks the medium the agent boots from when it is not a
// network boot: the USB rescue stick's EFI partition carries it as its GPT
// partition name or its FAT label. A disk with a partition (or a whole-disk
// filesystem) of this name is never a target.
const DefaultBootLabel = "PXESWARM"

// Config says where to look for disks and how to recognise the boot
// medium. The zero value looks at the running machine.
type Config struct {
	// Sys is the sysfs mount, "/sys" if empty. Disks are the entries of
	// Sys/block; a block device's own entry is Sys/dev/block/MAJ:MIN.
	Sys string
	// Dev holds the device nodes, "/dev" if empty.
	Dev string
	// Mounts lists mounted filesystems, "/proc/self/mounts" if empty.
	// Disks with a mounted partition are reported in use.
	Mounts string
	// IncludeVirtual lists loop, ram, zram, optical (sr) and floppy (fd)
	// devices too. They are skipped by default.
	IncludeVirtual bool
	// BootDevices name the medium the agent booted from, as "sdb",
	// "/dev/sdb" or a partition of it ("sdb1"), for example from the kernel
	// command line. Those disks are never targets.
	BootDevices []string
	// BootPartUUIDs name the boot medium by the unique GUID (PARTUUID) of
	// the partition the machine was loaded from: what the boot loader
	// reports (LoaderPartUUID) or the rescue stick's kernel command line
	// says. The disk holding such a partition is never a target.
	BootPartUUIDs []string
	// BootLabels mark the boot medium by a GPT partition name or a
	// filesystem label (FAT, ext2/3/4, ISO 9660; compared without regard to
	// case). Nil means [DefaultBootLabel]; an empty non-nil slice turns
	// label matching off.
	BootLabels []string
	// NodeTimeout bounds the wait for partition device nodes after a new
	// table is written; 10 s if zero.
	NodeTimeout time.Duration
	// Discard makes CreateTable discard (TRIM) the whole disk before it
	// writes the table, so an SSD starts blank. Errors from devices that
	// cannot discard are logged and ignored.
	Discard bool
}

func (c Config) withDefaults() Config {
	if c.Sys == "" {
		c.Sys = "/sys"
	}
	if c.Dev == "" {
		c.Dev = "/dev"
	}
	if c.Mounts == "" {
		c.Mounts = "/proc/self/mounts"
	}
	if c.BootLabels == nil {
		c.BootLabels = []string{DefaultBootLabel}
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = 10 * time.Second
	}
	return c
}

// Disk is one whole disk as the kernel and its partition table describe it.
type Disk struct {
	Name       string // kernel name: "sda", "nvme0n1", "vda"
	Path       string // device node: "/dev/sda"
	Size       int64  // bytes
	SectorSize int    // logical sector size in bytes
	Removable  bool   // the kernel's removable flag (USB sticks, card readers)
	// USB: the disk hangs off a USB bus (its sysfs device path passes
	// through a USB device). USB hard disks and SSDs usually report
	// Removable false, so this is what keeps them from being "first".
	USB        bool
	Rotational bool // a spinning disk
	ReadOnly   bool
	Model      string // as the device reports it, if it does
	Serial     string
	// Table is "gpt" or "mbr" as read from the disk, "" for none; GUID is
	// its disk GUID or MBR signature.
	Table string
	GUID  string
	// FSLabel is the label of a filesystem on the whole disk (a superfloppy
	// stick or an ISO 9660 image written to one).
	FSLabel    string
	Partitions []Partition
	// Boot says why this is the medium the agent booted from; "" if it is
	// not. The boot medium is never a target.
	Boot string
	// InUse says why the disk is busy (a partition is mounted or held by
	// LVM, RAID or dm-crypt); "" if it is free.
	InUse string
}

// Partition is one partition of a disk.
type Partition struct {
	Number int // 1-based
	// Name and Path are the kernel's name and device node ("sda1",
	// "/dev/sda1"). They are empty when the kernel has no device for this
	// partition (it has not re-read the table, or the disk is an image
	// file): address it on the disk at Start.
	Name, Path string
	Start      int64  // bytes from the start of the disk
	Size       int64  // bytes
	Type       string // GPT type GUID (upper case) or MBR type byte ("0x83")
	Label      string // GPT partition name
	// GUID is the GPT unique partition GUID (upper case), or for an MBR
	// partition the PARTUUID blkid shows (disk signature-number).
	GUID    string
	FSLabel string // filesystem label (FAT, ext2/3/4, ISO 9660), if found
	InUse   string // why this partition is busy, "" if free
}

// String describes a disk for logs and error messages: path, size, model
// and what keeps it from being a target.
func (d Disk) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s", d.Path, bytesize.Format(d.Size))
	if d.Model != "" {
		fmt.Fprintf(&b, ", %s", d.Model)
	}
	for _, s := range []struct {
		on   bool
		what string
	}{
		{d.Removable, "removable"}, {d.USB, "USB"}, {d.ReadOnly, "read-only"}, {d.Size == 0, "no medium"},
		{d.Boot != "", "boot medium: " + d.Boot}, {d.InUse != "", "in use: " + d.InUse},
	} {
		if s.on {
			b.WriteString(", " + s.what)
		}
	}
	b.WriteString(")")
	return b.String()
}

// virtual reports whether a kernel disk name is a loop, RAM, compressed
// RAM, optical or floppy device.
func virtual(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "sr", "fd"} {
		if rest, ok := strings.CutPrefix(name, p); ok && rest != "" && rest[0] >= '0' && rest[0] <= '9' {
			return true
		}
	}
	return false
}

// List returns the machine's disks in name order (see [lessName]), each
// with its partitions, boot-medium and in-use marks. A disk whose node
// cannot be opened or whose table cannot be read is still listed, with the
// partitions the kernel knows.
func (c Config) List(log *slog.Logger) ([]Disk, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c = c.withDefaults()
	dir := filepath.Join(c.Sys, "block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list disks in %s: is sysfs mounted? %w", dir, err)
	}
	mounts := readMounts(c.Mounts, log)
	var disks []Disk
	for _, e := range ents {
		name := e.Name()
		if !c.IncludeVirtual && virtual(name) {
			continue
		}
		sys := filepath.Join(dir, name)
		if readInt(sys, "hidden") == 1 { // an NVMe multipath member; the head device is listed
			continue
		}
		d := c.disk(log, sys, name)
		c.markBusy(&d, sys, mounts)
		c.markBoot(&d)
		disks = append(disks, d)
	}
	slices.SortFunc(disks, compareName)
	return disks, nil
}

// compareName orders disks by [lessName], for slices.SortFunc.
func compareName(a, b Disk) int {
	switch {
	case lessName(a.Name, b.Name):
		return -1
	case lessName(b.Name, a.Name):
		return 1
	}
	return 0
}

// onUSB reports whether the sysfs entry sys (Sys/block/<name>, a link
// into Sys/devices) sits below a USB device: the resolved path has an
// element such as "usb2" (a root hub) or "2-1:1.0" under one.
func onUSB(sys string) bool {
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return false
	}
	for _, el := range strings.Split(filepath.ToSlash(real), "/") {
		if n, ok := strings.CutPrefix(el, "usb"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
			return true
		}
	}
	return false
}

// disk reads one disk's sysfs attributes and its partition table.
func (c Config) disk(log *slog.Logger, sys, name string) Disk {
	d := Disk{
		Name:       name,
		Path:       filepath.Join(c.Dev, name),
		Size:       readInt(sys, "size") * 512, // sysfs sizes count 512-byte sectors, whatever the device's
		SectorSize: int(readInt(sys, "queue/logical_block_size")),
		Removable:  readInt(sys, "removable") == 1,
		Rotational: readInt(sys, "queue/rotational") == 1,
		ReadOnly:   readInt(sys, "ro") == 1,
		Model:      readString(sys, "device/model"),
		Serial:     readString(sys, "device/serial"),
	}
	if d.Serial == "" {
		d.Serial = readString(sys, "serial") // virtio-blk
	}
	d.USB = onUSB(sys)
	if checkSectorSize(d.SectorSize) != nil {
		d.SectorSize = 512
	}
	kernel := sysPartitions(sys, c.Dev)
	d.Partitions = kernel
	if d.Size == 0 {
		return d // no medium (an empty card reader)
	}
	f, err := os.Open(d.Path)
	if err != nil {
		log.Warn("cannot read disk; listing the partitions the kernel knows", "disk", d.Path, "err", err)
		return d
	}
	defer f.Close()
	t, err := ReadTable(f, d.Size, d.SectorSize)
	switch {
	case errors.Is(err, ErrNoTable):
		log.Debug("no partition table", "disk", d.Path, "reason", err)
	case err != nil:
		log.Warn("cannot read partition table", "disk", d.Path, "err", err)
	default:
		d.Table, d.GUID = t.Kind, t.GUID
		if t.Recovered {
			log.Warn("primary GPT is damaged; read the backup", "disk", d.Path)
		}
		d.Partitions = merge(log, d.Path, t.Partitions, kernel)
	}
	d.FSLabel = fsLabel(f, 0, d.Size)
	for i := range d.Partitions {
		p := &d.Partitions[i]
		p.FSLabel = fsLabel(f, p.Start, p.Size)
	}
	return d
}

// merge joins the on-disk table with the kernel's partitions by number.
// A table entry keeps the kernel's device only if the kernel agrees on its
// start and size; otherwise the kernel's view is stale and the partition
// is addressed on the disk. Kernel partitions missing from the table
// (MBR logical partitions) are kept as the kernel describes them.
func merge(log *slog.Logger, disk string, table, kernel []Partition) []Partition {
	out := slices.Clone(table)
	for i := range out {
		for _, k := range kernel {
			if k.Number != out[i].Number {
				continue
			}
			if k.Start == out[i].Start && k.Size == out[i].Size {
				out[i].Name, out[i].Path = k.Name, k.Path
			} else {
				log.Warn("the kernel's view of a partition differs from the table on disk; using the table",
					"disk", disk, "partition", k.Number, "kernel_start", k.Start, "kernel_size", k.Size,
					"table_start", out[i].Start, "table_size", out[i].Size)
			}
		}
	}
	for _, k := range kernel {
		if !slices.ContainsFunc(out, func(p Partition) bool { return p.Number == k.Number }) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b Partition) int { return a.Number - b.Number })
	return out
}

// sysPartitions lists the partitions the kernel has for a disk: the
// subdirectories of its sysfs entry that have a "partition" file.
func sysPartitions(sys, dev string) []Partition {
	ents, err := os.ReadDir(sys)
	if err != nil {
		return nil
	}
	var out []Partition
	for _, e := range ents {
		p := filepath.Join(sys, e.Name())
		n := readInt(p, "partition")
		if n <= 0 {
			continue
		}
		out = append(out, Partition{
			Number: int(n),
			Name:   e.Name(),
			Path:   filepath.Join(dev, e.Name()),
			Start:  readInt(p, "start") * 512,
			Size:   readInt(p, "size") * 512,
		})
	}
	slices.SortFunc(out, func(a, b Partition) int { return a.Number - b.Number })
	return out
}

// markBusy fills InUse from the mount table and sysfs holders.
func (c Config) markBusy(d *Disk, sys string, mounts map[string]string) {
	why := func(name, sysdir string) string {
		if m, ok := mounts[name]; ok {
			return name + " mounted on " + m
		}
		if hs, _ := os.ReadDir(filepath.Join(sysdir, "holders")); len(hs) > 0 {
			return name + " held by " + hs[0].Name()
		}
		return ""
	}
	d.InUse = why(d.Name, sys)
	for i := range d.Partitions {
		p := &d.Partitions[i]
		if p.Name == "" {
			continue
		}
		p.InUse = why(p.Name, filepath.Join(sys, p.Name))
		if d.InUse == "" {
			d.InUse = p.InUse
		}
	}
}

// markBoot fills Boot from BootPartUUIDs, BootDevices and BootLabels.
func (c Config) markBoot(d *Disk) {
	for _, u := range c.BootPartUUIDs {
		for _, p := range d.Partitions {
			if u != "" && normGUID(p.GUID) == normGUID(u) {
				d.Boot = fmt.Sprintf("the machine was loaded from its partition %d (PARTUUID %s)", p.Number, strings.ToLower(p.GUID))
				return
			}
		}
	}
	for _, b := range c.BootDevices {
		b = strings.TrimPrefix(b, "/dev/")
		if b == d.Name {
			d.Boot = "named as the boot device"
			return
		}
		for _, p := range d.Partitions {
			if p.Name != "" && b == p.Name {
				d.Boot = "its partition " + p.Name + " is named as the boot device"
				return
			}
		}
	}
	for _, l := range c.BootLabels {
		if l == "" {
			continue
		}
		if strings.EqualFold(d.FSLabel, l) {
			d.Boot = "its filesystem is labelled " + d.FSLabel
			return
		}
		for _, p := range d.Partitions {
			if strings.EqualFold(p.Label, l) {
				d.Boot = fmt.Sprintf("its partition %d is named %s", p.Number, p.Label)
				return
			}
			if strings.EqualFold(p.FSLabel, l) {
				d.Boot = fmt.Sprintf("its partition %d holds a filesystem labelled %s", p.Number, p.FSLabel)
				return
			}
		}
	}
}

// readMounts maps kernel device names ("sda1") to where they are mounted.
// Sources under /dev (also /dev/disk/by-* links) are resolved to names.
func readMounts(path string, log *slog.Logger) map[string]string {
	out := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("cannot read the mount table; mounted disks will not be marked", "file", path, "err", err)
		}
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 4<<20))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || !strings.HasPrefix(fields[0], "/dev/") {
			continue
		}
		src := fields[0]
		if r, err := filepath.EvalSymlinks(src); err == nil {
			src = r
		}
		name := filepath.Base(src)
		if _, ok := out[name]; !ok {
			out[name] = unescapeMount(fields[1])
		}
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space) of
// /proc/self/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readString(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readInt(dir, name string) int64 {
	v, err := strconv.ParseInt(readString(dir, name), 10, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// lessName orders kernel disk names as people count them: runs of digits
// by value, and letters alphabetically except that a longer letter index
// of the same family comes later. So sda < sdb < sdz < sdaa, nvme0n1 <
// nvme1n1 < nvme10n1, and mmcblk0 < nvme0n1 < sda < vda: an internal NVMe
// or eMMC disk comes before a USB disk (sd), which the kernel does not
// always mark removable.
func lessName(a, b string) bool {
	for a != "" && b != "" {
		ca, ra := chunk(a)
		cb, rb := chunk(b)
		da, db := isDigit(ca[0]), isDigit(cb[0])
		switch {
		case da && db:
			x, y := strings.TrimLeft(ca, "0"), strings.TrimLeft(cb, "0")
			if len(x) != len(y) {
				return len(x) < len(y)
			}
			if x != y {
				return x < y
			}
		case da != db:
			return da // digits before letters
		default:
			// Same family (sd, vd, xvd: at least two letters in common)
			// with a longer letter index: the shorter comes first.
			k := 0
			for k < len(ca) && k < len(cb) && ca[k] == cb[k] {
				k++
			}
			if k >= 2 && len(ca) != len(cb) {
				return len(ca) < len(cb)
			}
			if ca != cb {
				return ca < cb
			}
		}
		a, b = ra, rb
	}
	return len(a) < len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func chunk(s string) (string, string) {
	d := isDigit(s[0])
	i := 1
	for i < len(s) && isDigit(s[i]) == d {
		i++
	}
	return s[:i], s[i:]
}

// fsLabel reads the label of a filesystem starting at off: FAT12/16/32
// (the boot sector's volume label), ext2/3/4 (the superblock's volume
// name) or ISO 9660 (the primary volume descriptor's volume identifier).
// It returns "" for anything else.
func fsLabel(r io.ReaderAt, off, size int64) string {
	b := make([]byte, 2048)
	if size < int64(len(b)) {
		return ""
	}
	if n, _ := r.ReadAt(b, off); n != len(b) {
		return ""
	}
	clean := func(s []byte) string {
		l := strings.TrimRight(string(s), " \x00")
		if l == "NO NAME" {
			return ""
		}
		return l
	}
	// ext2/3/4: superblock at 1024, magic 0xEF53 at +56, volume name at +120.
	if b[1024+56] == 0x53 && b[1024+57] == 0xef {
		return clean(b[1024+120 : 1024+136])
	}
	if b[510] == 0x55 && b[511] == 0xaa {
		// FAT32 keeps its extended BPB at 64, FAT12/16 at 36: boot
		// signature 0x29, then serial, then an 11-byte label.
		if string(b[82:87]) == "FAT32" && b[66] == 0x29 {
			return clean(b[71:82])
		}
		if string(b[54:57]) == "FAT" && b[38] == 0x29 {
			return clean(b[43:54])
		}
	}
	// ISO 9660: volume descriptor 16 (byte 32768): type 1, "CD001".
	if size >= 32768+2048 {
		if n, _ := r.ReadAt(b, off+32768); n == len(b) && b[0] == 1 && string(b[1:6]) == "CD001" {
			return clean(b[40:72])
		}
	}
	return ""
}

// PartitionName is the kernel's name for partition n of a disk: "sda1",
// but "nvme0n1p1", "mmcblk0p1", "loop0p1" when the disk's name ends in a
// digit.
func PartitionName(disk string, n int) string {
	if disk != "" && isDigit(disk[len(disk)-1]) {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}
