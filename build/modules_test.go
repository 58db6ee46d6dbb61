package build

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"

	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// fakeTree writes a module tree: files maps a path relative to dir to its
// content.
func fakeTree(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func xzBytes(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zstdBytes(t *testing.T, b []byte) []byte {
	e, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	return e.EncodeAll(b, nil)
}

func gzBytes(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// A tree shaped like Debian's: a NIC with a PHY soft dependency, a disk
// stack through SCSI, a soft dependency named by alias, compressed files,
// a '-' in a file name and a built-in module.
var fakeDep = `kernel/drivers/net/nic.ko.xz: kernel/drivers/net/phy/libphy.ko.zst kernel/drivers/net/mdio.ko
kernel/drivers/net/phy/libphy.ko.zst:
kernel/drivers/net/phy/realtek.ko: kernel/drivers/net/phy/libphy.ko.zst
kernel/drivers/net/mdio.ko:
kernel/drivers/usb/storage/usb-storage.ko.gz: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/usb/core/usbcore.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/lib/crc-t10dif.ko
kernel/drivers/usb/core/usbcore.ko:
kernel/lib/crc-t10dif.ko:
kernel/crypto/crct10dif_generic.ko:
kernel/crypto/crct10dif-pclmul.ko:
kernel/drivers/unrelated.ko: kernel/drivers/net/mdio.ko
`

func fakeModules(t *testing.T) string {
	return fakeTree(t, map[string][]byte{
		"modules.dep":     []byte(fakeDep),
		"modules.builtin": []byte("kernel/drivers/virtio/virtio_pci.ko\nkernel/block/t10-pi.ko\n"),
		"modules.alias": []byte(`# Aliases extracted from modules themselves.
alias pci:v00001234d*sv*sd*bc*sc*i* nic
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
alias crct10dif crct10dif_generic
alias crct10dif crct10dif_pclmul
alias pci:v0000AAAAd*sv*sd*bc*sc*i* unrelated
`),
		"modules.softdep":                              []byte("softdep nic pre: realtek\nsoftdep crc_t10dif pre: crct10dif\nsoftdep unrelated post: mdio\n"),
		"kernel/drivers/net/nic.ko.xz":                 xzBytes(t, []byte("NIC")),
		"kernel/drivers/net/phy/libphy.ko.zst":         zstdBytes(t, []byte("LIBPHY")),
		"kernel/drivers/net/phy/realtek.ko":            []byte("REALTEK"),
		"kernel/drivers/net/mdio.ko":                   []byte("MDIO"),
		"kernel/drivers/usb/storage/usb-storage.ko.gz": gzBytes([]byte("USB-STORAGE")),
		"kernel/drivers/scsi/scsi_mod.ko":              []byte("SCSI"),
		"kernel/drivers/usb/core/usbcore.ko":           []byte("USBCORE"),
		"kernel/lib/crc-t10dif.ko":                     []byte("CRC"),
		"kernel/crypto/crct10dif_generic.ko":           []byte("CRCGEN"),
		"kernel/crypto/crct10dif-pclmul.ko":            []byte("CRCPCLMUL"),
		"kernel/drivers/unrelated.ko":                  []byte("UNRELATED"),
	})
}

func TestClosure(t *testing.T) {
	tree, err := readModuleTree(fakeModules(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		want        []string
		mods, built []string
		err         error
	}{
		{want: []string{"nic"}, mods: []string{"libphy", "mdio", "nic", "realtek"}},
		{want: []string{"usb-storage"}, mods: []string{"crc_t10dif", "crct10dif_generic", "crct10dif_pclmul", "scsi_mod", "usb_storage", "usbcore"}},
		{want: []string{"usb_storage", "virtio_pci"}, mods: []string{"crc_t10dif", "crct10dif_generic", "crct10dif_pclmul", "scsi_mod", "usb_storage", "usbcore"}, built: []string{"virtio_pci"}},
		{want: []string{"mdio", "MDIO"}, err: ErrModuleNotFound},
		{want: []string{"nic", "no_such", "virtio_pci"}, err: ErrModuleNotFound},
		{want: []string{}, mods: nil},
		// Folders, globs and exclusions.
		{want: []string{"kernel/drivers/net/"}, mods: []string{"libphy", "mdio", "nic", "realtek"}},
		{want: []string{"kernel/drivers/", "!unrelated", "!kernel/drivers/usb/"}, mods: []string{"crc_t10dif", "crct10dif_generic", "crct10dif_pclmul", "libphy", "mdio", "nic", "realtek", "scsi_mod"}},
		// An excluded module still comes along when a carried one needs it,
		// and when it is named plainly.
		{want: []string{"kernel/drivers/net/", "!kernel/drivers/net/phy/"}, mods: []string{"libphy", "mdio", "nic", "realtek"}},
		{want: []string{"kernel/drivers/net/", "!kernel/drivers/net/phy/", "!nic"}, mods: []string{"mdio"}},
		{want: []string{"kernel/drivers/", "!unrelated", "unrelated", "!kernel/drivers/usb/", "!kernel/drivers/scsi/"}, mods: []string{"libphy", "mdio", "nic", "realtek", "unrelated"}},
		{want: []string{"usb-*"}, mods: []string{"crc_t10dif", "crct10dif_generic", "crct10dif_pclmul", "scsi_mod", "usb_storage", "usbcore"}},
		{want: []string{"crct10dif_*", "virtio_pci"}, mods: []string{"crct10dif_generic", "crct10dif_pclmul"}, built: []string{"virtio_pci"}},
		{want: []string{"kernel/no_such/"}, err: ErrModuleNotFound},
		{want: []string{"no_such*"}, err: ErrModuleNotFound},
		{want: []string{"nic", "!no_such"}, err: ErrModuleNotFound},
	} {
		mods, built, err := tree.closure(tc.want)
		if !errors.Is(err, tc.err) {
			t.Errorf("closure(%q) error = %v, want %v", tc.want, err, tc.err)
			continue
		}
		if tc.err != nil {
			if !strings.Contains(err.Error(), "no_such") && !strings.Contains(err.Error(), "MDIO") {
				t.Errorf("closure(%q) error = %v, want it to name the missing module", tc.want, err)
			}
			continue
		}
		if diff := cmp.Diff(tc.mods, mods); diff != "" {
			t.Errorf("closure(%q) modules (-want +got):\n%s", tc.want, diff)
		}
		if diff := cmp.Diff(tc.built, built); diff != "" {
			t.Errorf("closure(%q) builtin (-want +got):\n%s", tc.want, diff)
		}
	}
}

func TestModuleFiles(t *testing.T) {
	tree, err := readModuleTree(fakeModules(t))
	if err != nil {
		t.Fatal(err)
	}
	mods, _, err := tree.closure([]string{"nic", "usb-storage"})
	if err != nil {
		t.Fatal(err)
	}
	files, err := tree.moduleFiles(mods)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range files {
		got[f.name] = string(f.data)
	}
	want := map[string]string{
		// Decompressed, under plain .ko names.
		"kernel/drivers/net/nic.ko":                 "NIC",
		"kernel/drivers/net/phy/libphy.ko":          "LIBPHY",
		"kernel/drivers/net/phy/realtek.ko":         "REALTEK",
		"kernel/drivers/net/mdio.ko":                "MDIO",
		"kernel/drivers/usb/storage/usb-storage.ko": "USB-STORAGE",
		"kernel/drivers/scsi/scsi_mod.ko":           "SCSI",
		"kernel/drivers/usb/core/usbcore.ko":        "USBCORE",
		"kernel/lib/crc-t10dif.ko":                  "CRC",
		"kernel/crypto/crct10dif_generic.ko":        "CRCGEN",
		"kernel/crypto/crct10dif-pclmul.ko":         "CRCPCLMUL",
		// Only carried modules, sorted by name, paths renamed.
		"modules.dep": `kernel/lib/crc-t10dif.ko:
kernel/crypto/crct10dif_generic.ko:
kernel/crypto/crct10dif-pclmul.ko:
kernel/drivers/net/phy/libphy.ko:
kernel/drivers/net/mdio.ko:
kernel/drivers/net/nic.ko: kernel/drivers/net/phy/libphy.ko kernel/drivers/net/mdio.ko
kernel/drivers/net/phy/realtek.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/lib/crc-t10dif.ko
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/usb/core/usbcore.ko
kernel/drivers/usb/core/usbcore.ko:
`,
		"modules.alias": `alias pci:v00001234d*sv*sd*bc*sc*i* nic
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
alias crct10dif crct10dif_generic
alias crct10dif crct10dif_pclmul
`,
		"modules.softdep": "softdep crc_t10dif pre: crct10dif\nsoftdep nic pre: realtek\n",
		"modules.builtin": "t10_pi\nvirtio_pci\n",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("moduleFiles(%q) (-want +got):\n%s", mods, diff)
	}
}

func TestReadModuleTreeErrors(t *testing.T) {
	if _, err := readModuleTree(t.TempDir()); err == nil {
		t.Error("readModuleTree(empty folder) = nil error, want one naming modules.dep")
	}
	dir := fakeTree(t, map[string][]byte{"modules.dep": []byte("this is not depmod output\n")})
	if _, err := readModuleTree(dir); err == nil {
		t.Error("readModuleTree(garbage modules.dep) = nil error, want one")
	}
	dir = fakeTree(t, map[string][]byte{"modules.dep": []byte("kernel/a.ko:\n")})
	tree, err := readModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.moduleFiles([]string{"a"}); err == nil {
		t.Error("moduleFiles(a) with a.ko missing = nil error, want one")
	}
}

// TestDebianModules checks the default list against the installed
// Debian kernel: everything is found, the closure holds what the drivers
// need, and nothing is compressed in a way we cannot read.
func TestDebianModules(t *testing.T) {
	kver, tree := hostModules(t)
	mods, _, err := tree.closure(DefaultModules)
	if err != nil {
		t.Fatalf("closure(DefaultModules) on %s: %v", kver, err)
	}
	need := []string{"virtio_net", "virtio_blk", "virtio_ring", "virtio", "libata", "scsi_mod", "usbcore", "nvme_core", "libphy", "realtek",
		// NICs: old and new PCI, paravirtual, USB.
		"8139too", "e1000e", "r8169", "tg3", "bnx2", "vmxnet3", "hv_netvsc", "r8152", "ax88179_178a", "cdc_ether", "cdc_ncm", "asix", "smsc95xx",
		// Disks: NVMe behind VMD, RAID and SAS HBAs, VMware's, Hyper-V's,
		// eMMC, SATA, USB.
		"nvme", "vmd", "megaraid_sas", "sym53c8xx", "pcnet32", "8139cp", "mpt3sas", "hpsa", "smartpqi", "vmw_pvscsi", "mptspi", "hv_storvsc", "virtio_scsi",
		"sdhci", "sdhci_pci", "sdhci_acpi", "mmc_block", "ahci", "ata_piix", "sd_mod", "usb_storage", "uas"}
	// Every wired Ethernet driver and every legacy IDE one.
	for name, p := range tree.path {
		if strings.HasPrefix(p, "kernel/drivers/net/ethernet/") || strings.HasPrefix(name, "pata_") {
			need = append(need, name)
		}
	}
	if len(need) < 150 {
		t.Errorf("only %d modules to look for: is %s Debian's full module tree?", len(need), kver)
	}
	for _, n := range need {
		if !slices.Contains(mods, n) && !tree.builtin[n] {
			t.Errorf("closure(DefaultModules) lacks %s", n)
		}
	}
	// With what they need, and without the SAN initiators.
	for _, m := range mods {
		for _, d := range tree.deps[m] {
			if !slices.Contains(mods, d) {
				t.Errorf("closure(DefaultModules) has %s but not %s, which it needs", m, d)
			}
		}
	}
	for _, n := range []string{"qla2xxx", "lpfc", "bnx2fc", "libiscsi", "scsi_debug"} {
		if slices.Contains(mods, n) {
			t.Errorf("closure(DefaultModules) carries %s: a SAN initiator or test driver, not a boot disk's", n)
		}
	}
	files, err := tree.moduleFiles(mods)
	if err != nil {
		t.Fatal(err)
	}
	var total int
	for _, f := range files {
		total += len(f.data)
		if strings.HasSuffix(f.name, ".ko") && !bytes.HasPrefix(f.data, []byte("\x7fELF")) {
			t.Errorf("module %s is not an ELF file after decompression", f.name)
		}
	}
	t.Logf("%s: %d modules, %d bytes uncompressed", kver, len(mods), total)

	// r8169 names its chips' PHY firmware (MODULE_FIRMWARE), as
	// modinfo -F firmware shows.
	for _, f := range files {
		if path.Base(f.name) != "r8169.ko" {
			continue
		}
		names, err := firmwareNames(f.data)
		if err != nil {
			t.Fatal(err)
		}
		if len(names) == 0 || !strings.HasPrefix(names[0], "rtl_nic/") {
			t.Errorf("firmwareNames(r8169.ko) = %q, want rtl_nic/... files", names)
		}
	}
}

// hostModules reads the module tree of the newest installed Debian
// kernel, checking on the way that its release read from the bzImage
// matches the file's name.
func hostModules(t *testing.T) (kver string, tree *moduleTree) {
	t.Helper()
	needs.Tool(t, "/boot/vmlinuz-*")
	kernel, err := NewestKernel(DefaultBoot)
	if err != nil {
		t.Fatal(err)
	}
	if kver, err = kernelVersion(kernel); err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-"); kver != want {
		t.Errorf("kernelVersion(%s) = %q, want %q", kernel, kver, want)
	}
	if tree, err = readModuleTree(filepath.Join("/lib/modules", kver)); err != nil {
		t.Fatalf("%v: the kernel's modules belong to the same linux-image package", err)
	}
	return kver, tree
}

func TestFirmwareFiles(t *testing.T) {
	dir := fakeTree(t, map[string][]byte{
		"rtl_nic/rtl8168g-2.fw":    []byte("PLAIN"),
		"rtl_nic/rtl8168h-2.fw.xz": xzBytes(t, []byte("XZ")),
		"bnx2/bnx2-mips-09.fw.zst": zstdBytes(t, []byte("ZSTD")),
		"unrelated/other.fw":       []byte("NOT ASKED FOR"),
	})
	files, missing, err := firmwareFiles(dir, []string{"rtl_nic/rtl8168h-2.fw", "tigon/tg3.bin", "rtl_nic/rtl8168g-2.fw", "bnx2/bnx2-mips-09.fw", "rtl_nic/rtl8168g-2.fw"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range files {
		got[f.name] = string(f.data)
	}
	want := map[string]string{"rtl_nic/rtl8168g-2.fw": "PLAIN", "rtl_nic/rtl8168h-2.fw": "XZ", "bnx2/bnx2-mips-09.fw": "ZSTD"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("firmwareFiles() files (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"tigon/tg3.bin"}, missing); diff != "" {
		t.Errorf("firmwareFiles() missing (-want +got):\n%s", diff)
	}
	if _, _, err := firmwareFiles(dir, []string{"../../etc/shadow"}); err == nil {
		t.Error("firmwareFiles(../../etc/shadow) = nil error, want one")
	}
}

// bzImage makes a minimal x86 boot header holding version.
func bzImage(version string, protocol uint16) []byte {
	b := make([]byte, 0x400)
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], protocol)
	binary.LittleEndian.PutUint16(b[0x20E:], 0x100) // string at 0x300
	if version != "" {
		copy(b[0x300:], version+" (someone@example) #1 SMP\x00")
	}
	return b
}

func TestKernelVersion(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		data []byte
		want string
		err  error
	}{
		{data: bzImage("6.1.0-56-amd64", 0x20f), want: "6.1.0-56-amd64"},
		{data: bzImage("6.12.9+deb13-amd64", 0x20f), want: "6.12.9+deb13-amd64"},
		{data: bzImage("", 0x20f), err: ErrNotBzImage},
		{data: bzImage("2.4", 0x100), err: ErrNotBzImage},
		{data: []byte("\x7fELF not a bzImage"), err: ErrNotBzImage},
	} {
		p := filepath.Join(dir, "vmlinuz")
		os.WriteFile(p, tc.data, 0o644)
		got, err := kernelVersion(p)
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("kernelVersion(%q...) = %q, %v, want %q, %v", tc.data[0x300:0x310], got, err, tc.want, tc.err)
		}
	}
}

func TestNewestKernel(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewestKernel(dir); !errors.Is(err, ErrNoKernel) {
		t.Errorf("NewestKernel(empty) error = %v, want %v", err, ErrNoKernel)
	}
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"} {
		os.WriteFile(filepath.Join(dir, "vmlinuz-"+v), nil, 0o644)
	}
	got, err := NewestKernel(dir)
	if want := filepath.Join(dir, "vmlinuz-6.1.0-10-amd64"); err != nil || got != want {
		t.Errorf("NewestKernel() = %q, %v, want %q", got, err, want)
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"6.1.0-9-amd64", "6.1.0-10-amd64", true},
		{"6.1.0-10-amd64", "6.1.0-9-amd64", false},
		{"5.19.0-1-amd64", "6.1.0-1-amd64", true},
		{"6.1.0-1-amd64", "6.1.0-1-amd64", false},
		{"6.1", "6.1.0", true},
		{"6.01", "6.1", false},
	} {
		if got := versionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("versionLess(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestPickCompression(t *testing.T) {
	debian := map[string]string{"CONFIG_RD_GZIP": "y", "CONFIG_RD_XZ": "y"}
	gzOnly := map[string]string{"CONFIG_RD_GZIP": "y"}
	for _, tc := range []struct {
		want string
		cfg  map[string]string
		got  string
		err  error
	}{
		{CompressAuto, debian, CompressXZ, nil},
		{"", debian, CompressXZ, nil},
		{CompressAuto, gzOnly, CompressGzip, nil},
		{CompressAuto, nil, CompressGzip, nil},
		{CompressXZ, gzOnly, "", ErrCompression},
		{CompressGzip, debian, CompressGzip, nil},
		{CompressXZ, nil, CompressXZ, nil},
	} {
		got, err := pickCompression(tc.want, tc.cfg)
		if got != tc.got || !errors.Is(err, tc.err) {
			t.Errorf("pickCompression(%q, %v) = %q, %v, want %q, %v", tc.want, tc.cfg, got, err, tc.got, tc.err)
		}
	}
	if _, err := pickCompression("lz4", debian); err == nil {
		t.Error(`pickCompression("lz4") = nil error, want one`)
	}
}

func TestCheckKernelConfig(t *testing.T) {
	good := map[string]string{"CONFIG_BLK_DEV_INITRD": "y", "CONFIG_DEVTMPFS": "y", "CONFIG_MSDOS_PARTITION": "y", "CONFIG_EFI_PARTITION": "y", "CONFIG_PACKET": "y"}
	if err := checkKernelConfig(good); err != nil {
		t.Errorf("checkKernelConfig(good) = %v, want nil", err)
	}
	bad := map[string]string{"CONFIG_BLK_DEV_INITRD": "y", "CONFIG_DEVTMPFS": "y", "CONFIG_MSDOS_PARTITION": "y", "CONFIG_PACKET": "m"}
	err := checkKernelConfig(bad)
	if !errors.Is(err, ErrKernelConfig) || !strings.Contains(err.Error(), "CONFIG_EFI_PARTITION") || !strings.Contains(err.Error(), "CONFIG_PACKET") {
		t.Errorf("checkKernelConfig(no GPT, modular packet) = %v, want %v naming both", err, ErrKernelConfig)
	}
}

// readArchive reads back a newc archive.
func readArchive(t *testing.T, raw []byte) []cpio.Record {
	t.Helper()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestArchive(t *testing.T) {
	build := func(order []int) []byte {
		a := newArchive()
		steps := []func() error{
			func() error { return a.file("lib/modules/6.1/kernel/x.ko", 0o644, []byte("x")) },
			func() error { return a.symlink("init", "bbin/init") },
			func() error { return a.file("bbin/bb", 0o755, []byte("busybox")) },
			func() error { return a.charDev("dev/console", 0o600, 5, 1) },
			func() error { return a.dir("tmp", 0o1777) },
			func() error { return a.file("bbin-x", 0o644, nil) },
		}
		for _, i := range order {
			if err := steps[i](); err != nil {
				t.Fatal(err)
			}
		}
		var buf bytes.Buffer
		if err := a.writeTo(&buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	one, two := build([]int{0, 1, 2, 3, 4, 5}), build([]int{5, 4, 3, 2, 1, 0})
	if !bytes.Equal(one, two) {
		t.Error("archive bytes depend on the order entries were added")
	}
	var names []string
	seen := map[string]bool{}
	for _, r := range readArchive(t, one) {
		if r.Name == cpio.Trailer {
			continue
		}
		names = append(names, r.Name)
		if d := path.Dir(r.Name); d != "." && !seen[d] {
			t.Errorf("%s comes before its folder %s", r.Name, d)
		}
		seen[r.Name] = true
		if r.MTime != 0 || r.UID != 0 || r.GID != 0 {
			t.Errorf("%s: mtime %d uid %d gid %d, want all 0", r.Name, r.MTime, r.UID, r.GID)
		}
	}
	want := []string{"bbin", "bbin-x", "bbin/bb", "dev", "dev/console", "init", "lib", "lib/modules", "lib/modules/6.1", "lib/modules/6.1/kernel", "lib/modules/6.1/kernel/x.ko", "tmp"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("archive entries (-want +got):\n%s", diff)
	}

	a := newArchive()
	if err := a.file("etc/x", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.file("etc/x", 0o644, nil); err == nil {
		t.Error("adding etc/x twice = nil error, want one")
	}
	if err := a.file("etc/x/y", 0o644, nil); err == nil {
		t.Error("adding etc/x/y under the file etc/x = nil error, want one")
	}
	if err := a.dir("etc", 0o755); err != nil {
		t.Errorf("adding the folder etc again = %v, want nil", err)
	}
}

func TestCompressRoundTrip(t *testing.T) {
	raw := bytes.Repeat([]byte("pxeswarm initramfs "), 10000)
	for _, format := range []string{CompressXZ, CompressGzip} {
		var one, two bytes.Buffer
		if err := compress(&one, raw, format); err != nil {
			t.Fatal(err)
		}
		compress(&two, raw, format)
		if !bytes.Equal(one.Bytes(), two.Bytes()) {
			t.Errorf("compress(%s) is not deterministic", format)
		}
		got, err := decompress(one.Bytes())
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("decompress(compress(%s)) = %d bytes, %v, want the input back", format, len(got), err)
		}
	}
	// The kernel's XZ decoder wants CRC32 checks: stream flags byte 7
	// holds the check type (1 = CRC32; xz-file-format.txt 2.1.1.2).
	var buf bytes.Buffer
	compress(&buf, raw, CompressXZ)
	if got := buf.Bytes()[7]; got != 1 {
		t.Errorf("xz check type = %d, want 1 (CRC32)", got)
	}
}

// decompress undoes compress, by magic number.
func decompress(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	switch {
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		r, err := xz.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		_, err = buf.ReadFrom(r)
		return buf.Bytes(), err
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		_, err = buf.ReadFrom(r)
		return buf.Bytes(), err
	}
	return nil, errors.New("unknown compression")
}

// TestDefaultCommandsListed: every default command is imported by
// dependencies.go, so `go mod tidy` keeps it, and nothing more.
func TestDefaultCommandsListed(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "dependencies.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	var imported []string
	for _, im := range f.Imports {
		p, _ := strconv.Unquote(im.Path.Value)
		imported = append(imported, strings.TrimPrefix(p, uroot))
	}
	want := slices.Clone(DefaultCommands)
	slices.Sort(want)
	slices.Sort(imported)
	if diff := cmp.Diff(want, imported); diff != "" {
		t.Errorf("dependencies.go imports vs DefaultCommands (-DefaultCommands +imports):\n%s", diff)
	}
}

func TestDriversLine(t *testing.T) {
	r := Result{Modules: []string{"a", "b", "c"}, ModulesSize: 3 << 20, Firmware: []string{"rtl_nic/rtl8168d-1.fw"}, FirmwareSize: 2048,
		MissingFirmware: []string{"bnx2/bnx2-mips-06-6.2.3.fw", "rtl_nic/rtl8168e-1.fw", "rtl_nic/rtl8168e-2.fw", "e100/d101m_ucode.bin", "tr_smctr.bin"}}
	want := "modules: 3 carried (3MiB unpacked), firmware: 1 files (2KiB), missing: 5 firmware files: /lib/firmware (1), bnx2 (1), e100 (1), rtl_nic (2)"
	if got := r.Drivers(); got != want {
		t.Errorf("Drivers() = %q\nwant         %q", got, want)
	}
	r.MissingFirmware = nil
	if got := r.Drivers(); !strings.HasSuffix(got, "missing: none") {
		t.Errorf("Drivers() = %q, want it to end in \"missing: none\"", got)
	}
}
