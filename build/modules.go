package build

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/pxeswarm/pxeswarm/initramfs/coldplug"
)

// DefaultModules are the kernel modules the initramfs carries (with what
// they need, from modules.dep and modules.softdep): every wired Ethernet
// driver and the common USB Ethernet ones, every driver of a disk a PC or
// a virtual machine boots from (SATA/AHCI and IDE, NVMe and Intel VMD,
// SCSI and SAS HBAs and RAID controllers, virtio, Hyper-V, VMware, eMMC
// and SD, USB storage), the USB host controllers and keyboards for the
// rescue shell, and efivarfs.
//
// Entries are module names, name globs or folders of the kernel's module
// tree (moduleTree.expand): a folder keeps the list short and takes in a
// new kernel's new drivers. Names may be written with '-' or '_'
// (modprobe treats them alike). A name that the kernel has built in
// (modules.builtin) is skipped.
//
// Debian's linux-image-amd64 builds all of these as modules; with it the
// list carries about 500 modules (about 60 MiB unpacked; kernel plus
// initramfs stay under 40 MiB: TestBuildReproducible measures it).
//
// The partition-table parsers (CONFIG_MSDOS_PARTITION, CONFIG_EFI_PARTITION)
// are not listed: Linux cannot build them as modules, they are part of the
// block layer. Build checks the kernel's config for them instead.
var DefaultModules = []string{
	// Wired NICs: every PCI (and PCMCIA) Ethernet driver, and the
	// paravirtual ones of QEMU/KVM, Hyper-V, VMware and Xen.
	"kernel/drivers/net/ethernet/",
	"virtio_net", "hv_netvsc", "vmxnet3", "xen-netfront",
	// USB Ethernet adapters (docks, dongles, ultrabooks without a port):
	// Realtek, ASIX, SMSC/Microchip and the CDC class drivers.
	"r8152", "r8153_ecm", "ax88179_178a", "asix", "smsc95xx", "cdc_ether", "cdc_ncm",
	// SATA/AHCI, legacy IDE (pata_*, ata_piix) and the SATA chip drivers.
	"kernel/drivers/ata/",
	// NVMe, and Intel VMD that hides NVMe behind it on many new laptops.
	"nvme", "vmd",
	// SCSI and SAS HBAs and RAID controllers (megaraid_sas, mpt3sas, hpsa,
	// smartpqi, aacraid, vmw_pvscsi, BusLogic, ...), Hyper-V's and virtio's
	// SCSI, SCSI disks (SATA and USB sticks show up as sd*); the LSI
	// Fusion HBAs that VMware emulates. Not the Fibre Channel, FCoE and
	// iSCSI initiators (SAN storage, not a disk a PC boots from), tapes,
	// changers and the SCSI debug driver.
	"kernel/drivers/scsi/", "mptspi", "mptsas",
	"!kernel/drivers/scsi/qla2xxx/", "!kernel/drivers/scsi/lpfc/", "!kernel/drivers/scsi/bfa/",
	"!kernel/drivers/scsi/qla4xxx/", "!kernel/drivers/scsi/cxgbi/", "!kernel/drivers/scsi/qedf/",
	"!kernel/drivers/scsi/qedi/", "!kernel/drivers/scsi/csiostor/", "!kernel/drivers/scsi/libfc/",
	"!kernel/drivers/scsi/fcoe/", "!kernel/drivers/scsi/fnic/", "!kernel/drivers/scsi/bnx2fc/",
	"!kernel/drivers/scsi/bnx2i/", "!kernel/drivers/scsi/be2iscsi/",
	"!iscsi_tcp", "!iscsi_boot_sysfs", "!libiscsi*", "!scsi_transport_iscsi", "!scsi_transport_fc",
	"!st", "!ch", "!scsi_debug",
	// virtio and Xen block devices, and the virtio PCI transport.
	"virtio_blk", "virtio_scsi", "virtio_pci", "xen-blkfront",
	// eMMC and SD cards on PCI and ACPI SDHCI controllers.
	"sdhci", "sdhci-pci", "sdhci-acpi", "mmc_block",
	// USB sticks (the rescue stick, or a target) and their host controllers.
	"kernel/drivers/usb/storage/", "xhci_pci", "xhci_hcd", "ehci_pci", "ehci_hcd",
	// USB keyboards, so the rescue shell can be typed into.
	"usbhid", "hid_generic",
	// The boot loader's EFI variables: the rescue stick finds itself by
	// the partition systemd-boot says it was loaded from.
	"efivarfs",
}

// ErrModuleNotFound means a module asked for is neither in the kernel's
// modules.dep nor built in (modules.builtin).
var ErrModuleNotFound = errors.New("kernel module not found")

// moduleTree is what depmod wrote for one kernel (/lib/modules/<kver>).
type moduleTree struct {
	dir     string
	path    map[string]string   // module name -> path relative to dir
	deps    map[string][]string // module name -> dependency names, as listed
	builtin map[string]bool
	aliases []coldplug.Alias
	softdep map[string]coldplug.Softdep
}

// readModuleTree reads modules.dep, modules.builtin, modules.alias and
// modules.softdep from dir. Only modules.dep is required.
func readModuleTree(dir string) (*moduleTree, error) {
	t := &moduleTree{dir: dir, builtin: map[string]bool{}, softdep: map[string]coldplug.Softdep{}}
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w (is the kernel's modules package installed? give the modules folder of the kernel)", err)
	}
	if t.path, t.deps, err = coldplug.ParseDep(dep); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "modules.dep"), err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		t.builtin = coldplug.ParseBuiltin(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.alias")); err == nil {
		t.aliases = coldplug.ParseAliases(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.softdep")); err == nil {
		t.softdep = coldplug.ParseSoftdep(b)
	}
	return t, nil
}

// resolve turns a softdep target (a module name or an alias such as
// "crypto-crc32c") into module names present in modules.dep.
func (t *moduleTree) resolve(name string) []string {
	if _, ok := t.path[coldplug.NormName(name)]; ok {
		return []string{coldplug.NormName(name)}
	}
	var out []string
	for _, a := range t.aliases {
		if ok, _ := path.Match(a.Pattern, name); ok {
			if _, present := t.path[a.Module]; present && !slices.Contains(out, a.Module) {
				out = append(out, a.Module)
			}
		}
	}
	return out
}

// expand turns a module list into module names. An entry is
//
//   - a folder of the module tree, ending in '/' ("kernel/drivers/ata/"):
//     every module under it;
//   - a name glob ("pata_*", path.Match syntax): every module so named;
//   - a module name, as modprobe takes it;
//   - any of these after '!': not those, unless named plainly or needed
//     by a module that is carried (exclusions thin out folders and globs).
//
// Built-in names are returned separately. A name, folder or glob that
// matches nothing is an error: a typo, or a kernel without that driver.
func (t *moduleTree) expand(list []string) (names, builtin []string, err error) {
	byPath := map[string]string{} // path -> module name
	for name, p := range t.path {
		byPath[p] = name
	}
	matches := func(entry string) []string {
		var out []string
		switch {
		case strings.HasSuffix(entry, "/"):
			for p, name := range byPath {
				if strings.HasPrefix(p, entry) {
					out = append(out, name)
				}
			}
		case strings.ContainsAny(entry, "*?["):
			glob := coldplug.NormName(entry)
			for name := range t.path {
				if ok, _ := path.Match(glob, name); ok {
					out = append(out, name)
				}
			}
		case t.path[coldplug.NormName(entry)] != "":
			out = append(out, coldplug.NormName(entry))
		}
		sort.Strings(out)
		return out
	}
	var missing []string
	excluded := map[string]bool{}
	for _, e := range list {
		e = strings.TrimSpace(e)
		if rest, ok := strings.CutPrefix(e, "!"); ok {
			m := matches(rest)
			if len(m) == 0 {
				missing = append(missing, e)
			}
			for _, name := range m {
				excluded[name] = true
			}
		}
	}
	seen := map[string]bool{}
	for _, e := range list {
		e = strings.TrimSpace(e)
		if strings.HasPrefix(e, "!") {
			continue
		}
		plain := !strings.HasSuffix(e, "/") && !strings.ContainsAny(e, "*?[")
		m := matches(e)
		switch {
		case len(m) == 0 && plain && t.builtin[coldplug.NormName(e)]:
			builtin = append(builtin, coldplug.NormName(e))
			continue
		case len(m) == 0:
			missing = append(missing, e)
		}
		for _, name := range m {
			if (plain || !excluded[name]) && !seen[name] {
				seen[name] = true
				names = append(names, name)
			}
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("%w: %s in %s (not in modules.dep, not built in): drop them from the module list, or use a kernel that has them", ErrModuleNotFound, strings.Join(missing, ", "), t.dir)
	}
	return names, builtin, nil
}

// closure returns the modules to carry for a module list (expand): each
// one with its dependencies (modules.dep) and soft dependencies
// (modules.softdep, resolved through modules.alias), sorted. Built-in
// names are returned separately.
func (t *moduleTree) closure(want []string) (mods, builtin []string, err error) {
	names, builtin, err := t.expand(want)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		if seen[name] {
			return
		}
		seen[name] = true
		for _, d := range t.deps[name] {
			if _, ok := t.path[d]; ok {
				visit(d)
			}
		}
		sd := t.softdep[name]
		for _, s := range append(slices.Clone(sd.Pre), sd.Post...) {
			for _, m := range t.resolve(s) {
				visit(m)
			}
		}
	}
	for _, name := range names {
		visit(name)
	}
	for m := range seen {
		mods = append(mods, m)
	}
	sort.Strings(mods)
	sort.Strings(builtin)
	return mods, builtin, nil
}

// moduleFile is one file of the carried module tree, relative to
// lib/modules/<kver>.
type moduleFile struct {
	name string
	data []byte
}

// moduleFiles reads the carried modules (decompressed: Debian may ship
// .ko.xz or .ko.zst, and neither u-root's loader nor a 6.1 kernel's
// finit_module takes them compressed; the whole initramfs is compressed
// anyway) and writes modules.dep, modules.alias, modules.softdep and
// modules.builtin restricted to them.
func (t *moduleTree) moduleFiles(mods []string) ([]moduleFile, error) {
	carried := map[string]bool{}
	for _, m := range mods {
		carried[m] = true
	}
	var files []moduleFile
	rel := map[string]string{}
	for _, m := range mods {
		p := t.path[m]
		data, err := readModule(filepath.Join(t.dir, p))
		if err != nil {
			return nil, err
		}
		out := plainKo(p)
		rel[m] = out
		files = append(files, moduleFile{name: out, data: data})
	}
	var dep bytes.Buffer
	for _, m := range mods {
		fmt.Fprintf(&dep, "%s:", rel[m])
		for _, d := range t.deps[m] {
			if carried[d] {
				fmt.Fprintf(&dep, " %s", rel[d])
			}
		}
		dep.WriteByte('\n')
	}
	var al bytes.Buffer
	for _, a := range t.aliases {
		if carried[a.Module] {
			fmt.Fprintf(&al, "alias %s %s\n", a.Pattern, a.Module)
		}
	}
	var sd bytes.Buffer
	for _, m := range mods {
		s, ok := t.softdep[m]
		if !ok {
			continue
		}
		fmt.Fprintf(&sd, "softdep %s", m)
		if len(s.Pre) > 0 {
			fmt.Fprintf(&sd, " pre: %s", strings.Join(s.Pre, " "))
		}
		if len(s.Post) > 0 {
			fmt.Fprintf(&sd, " post: %s", strings.Join(s.Post, " "))
		}
		sd.WriteByte('\n')
	}
	var bi bytes.Buffer
	var builtins []string
	for b := range t.builtin {
		builtins = append(builtins, b)
	}
	sort.Strings(builtins)
	for _, b := range builtins {
		fmt.Fprintln(&bi, b)
	}
	files = append(files,
		moduleFile{"modules.dep", dep.Bytes()},
		moduleFile{"modules.alias", al.Bytes()},
		moduleFile{"modules.softdep", sd.Bytes()},
		// Names only (not depmod's paths): the loader just needs to
		// know which modules it need not look for.
		moduleFile{"modules.builtin", bi.Bytes()},
	)
	return files, nil
}

// plainKo strips a compression suffix: "x.ko.xz" -> "x.ko".
func plainKo(p string) string {
	if i := strings.LastIndex(p, ".ko"); i >= 0 {
		return p[:i+3]
	}
	return p
}

// readModule reads a module file, decompressing .ko.xz, .ko.zst and .ko.gz.
func readModule(file string) ([]byte, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("kernel module: %w (modules.dep lists it: is the modules folder complete?)", err)
	}
	if !strings.HasSuffix(file, ".ko") && !strings.HasSuffix(file, ".ko.xz") && !strings.HasSuffix(file, ".ko.zst") && !strings.HasSuffix(file, ".ko.gz") {
		return nil, fmt.Errorf("kernel module %s: unknown compression (want .ko, .ko.xz, .ko.zst or .ko.gz)", file)
	}
	out, err := unpack(raw, path.Ext(file))
	if err != nil {
		return nil, fmt.Errorf("kernel module %s: decompress: %w", file, err)
	}
	return out, nil
}

// kernelConfig reads a kernel's .config into a map of CONFIG_X -> value
// ("y", "m", ...). Unset options are absent.
func kernelConfig(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			cfg[k] = v
		}
	}
	return cfg, s.Err()
}

// firmwareNames lists the firmware files a module may ask for: the
// "firmware=" entries of its .modinfo ELF section (MODULE_FIRMWARE), as
// modinfo -F firmware prints them.
func firmwareNames(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, nil
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("firmware=")); ok && len(v) > 0 {
			names = append(names, string(v))
		}
	}
	return names, nil
}

// firmwareFiles reads the named firmware files from dir (Debian's
// /lib/firmware), decompressing .xz and .zst copies, and says which are
// not there. The kernel's firmware loader reads /lib/firmware/<name>
// straight from the initramfs, without udev.
func firmwareFiles(dir string, names []string) (files []moduleFile, missing []string, err error) {
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		if strings.Contains(n, "..") || path.IsAbs(n) {
			return nil, nil, fmt.Errorf("firmware name %q: not a plain relative path", n)
		}
		var data []byte
		found := false
		for _, ext := range []string{"", ".xz", ".zst"} {
			raw, err := os.ReadFile(filepath.Join(dir, n+ext))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("firmware %s: %w", n, err)
			}
			if data, err = unpack(raw, ext); err != nil {
				return nil, nil, fmt.Errorf("firmware %s%s: %w", n, ext, err)
			}
			found = true
			break
		}
		if !found {
			missing = append(missing, n)
			continue
		}
		files = append(files, moduleFile{name: n, data: data})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	sort.Strings(missing)
	return files, missing, nil
}

// unpack undoes a module's or firmware file's compression by its
// extension (.xz, .zst, .gz); other files are returned as they are.
func unpack(raw []byte, ext string) ([]byte, error) {
	var r io.Reader
	var err error
	switch ext {
	case ".xz":
		r, err = xz.NewReader(bytes.NewReader(raw))
	case ".zst":
		var d *zstd.Decoder
		if d, err = zstd.NewReader(bytes.NewReader(raw)); err == nil {
			defer d.Close()
			r = d
		}
	case ".gz":
		r, err = gzip.NewReader(bytes.NewReader(raw))
	default:
		return raw, nil
	}
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}
