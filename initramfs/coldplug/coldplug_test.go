package coldplug

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

const kver = "6.1.0-test"

// writeTree writes files (relative to root) into a fresh root.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// fakeRoot is a terminal with a virtio NIC, a virtio disk, an Intel NIC
// whose driver is already loaded, a USB controller and a device nobody
// drives; its module tree is shaped like what build/ writes.
func fakeRoot(t *testing.T) string {
	m := "lib/modules/" + kver + "/"
	root := writeTree(t, map[string]string{
		m + "modules.dep": `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:
kernel/drivers/net/ethernet/realtek/r8169.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/phy/libphy.ko:
kernel/drivers/net/phy/realtek.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/usb/host/xhci-pci.ko: kernel/drivers/usb/host/xhci-hcd.ko
kernel/drivers/usb/host/xhci-hcd.ko:
kernel/drivers/usb/storage/usb-storage.ko:
kernel/fs/efivarfs/efivarfs.ko:
kernel/drivers/mmc/core/mmc_core.ko:
kernel/drivers/mmc/host/sdhci.ko: kernel/drivers/mmc/core/mmc_core.ko
kernel/drivers/mmc/host/sdhci-pci.ko: kernel/drivers/mmc/host/sdhci.ko kernel/drivers/mmc/core/mmc_core.ko
kernel/drivers/mmc/core/mmc_block.ko: kernel/drivers/mmc/core/mmc_core.ko
`,
		m + "modules.alias": `alias pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_net
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v000010ECd00008168sv*sd*bc*sc*i* r8169
alias pci:v*d*sv*sd*bc0Csc03i30* xhci_pci
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip62in* usb_storage
alias pci:v*d*sv*sd*bc08sc05i* sdhci_pci
alias mmc:block mmc_block
`,
		m + "modules.softdep": "softdep r8169 pre: realtek\n",
		m + "modules.builtin": "crc32c\n",
		// sysfs: devices with their modalias (only the PCI ones at first).
		"sys/devices/pci0000:00/0000:00:02.0/modalias": "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00\n",
		"sys/devices/pci0000:00/0000:00:03.0/modalias": "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00\n",
		"sys/devices/pci0000:00/0000:00:04.0/modalias": "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00\n",
		"sys/devices/pci0000:00/0000:00:05.0/modalias": "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30\n",
		"sys/devices/pci0000:00/0000:00:06.0/modalias": "pci:v0000FFFFd0000FFFFsv00000000sd00000000bcFFscFFiFF\n",
		"sys/devices/platform/serial8250/modalias":     "platform:serial8250\n",
		// An SD host controller; its uevent repeats the modalias file.
		"sys/devices/pci0000:00/0000:00:08.0/modalias": "pci:v00001B36d00000007sv00001AF4sd00001100bc08sc05i01\n",
		"sys/devices/pci0000:00/0000:00:08.0/uevent":   "DRIVER=sdhci-pci\nMODALIAS=pci:v00001B36d00000007sv00001AF4sd00001100bc08sc05i01\n",
		"sys/devices/pci0000:00/0000:00:02.0/vendor":   "0x1af4\n",
		"proc/modules": "e1000e 327680 0 - Live 0x0000000000000000\n",
		"proc/cmdline": "console=ttyS0 virtio-net.napi_tx=1 virtio_net.csum=0 pxeswarm.server=http://198.18.0.1:8080/ ip=dhcp\n",
	})
	// A symlink loop, as sysfs has everywhere: the walk must not follow it.
	if err := os.Symlink("../..", filepath.Join(root, "sys/devices/pci0000:00/0000:00:02.0/subsystem")); err != nil {
		t.Fatal(err)
	}
	return root
}

// fakeKernel records loads. As the kernel would, a loaded virtio_pci
// makes the virtio bus devices appear, and a loaded xhci_pci a USB stick.
type fakeKernel struct {
	t      *testing.T
	root   string
	loads  []string
	params map[string]string
	fail   map[string]error
}

func (k *fakeKernel) load(file, params string) error {
	if !strings.HasPrefix(file, filepath.Join(k.root, "lib/modules", kver)+"/") {
		k.t.Errorf("load(%s): not under the root %s", file, k.root)
	}
	name := ModuleName(file)
	if err := k.fail[name]; err != nil {
		return err
	}
	k.loads = append(k.loads, name)
	if params != "" {
		k.params[name] = params
	}
	add := func(rel, alias string) {
		p := filepath.Join(k.root, "sys/devices", rel, "modalias")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(alias+"\n"), 0o644)
	}
	switch name {
	case "virtio_pci":
		add("pci0000:00/0000:00:02.0/virtio0", "virtio:d00000001v00001AF4")
		add("pci0000:00/0000:00:03.0/virtio1", "virtio:d00000002v00001AF4")
	case "xhci_pci":
		add("pci0000:00/0000:00:05.0/usb1/1-1/1-1:1.0", "usb:v0781p5583d0100dc00dsc00dp00ic08isc06ip50in00")
	case "sdhci_pci":
		// An SD card has no modalias file, only its uevent's MODALIAS
		// (as QEMU's sd-card on sdhci-pci shows under Linux 6.1).
		p := filepath.Join(k.root, "sys/devices/pci0000:00/0000:00:08.0/mmc_host/mmc0/mmc0:4567/uevent")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("MMC_TYPE=SD\nMMC_NAME=QEMU!\nMODALIAS=mmc:block\n"), 0o644)
	}
	return nil
}

func TestLoad(t *testing.T) {
	root := fakeRoot(t)
	k := &fakeKernel{t: t, root: root, params: map[string]string{}}
	loaded, err := load(context.Background(), testlog.New(t), Config{Root: root, Release: kver, Poll: time.Millisecond, Quiet: 30 * time.Millisecond,
		Always: []string{"efivarfs"}}, k.load)
	if err != nil {
		t.Fatalf("load() error = %v", err)
	}
	// First what is always loaded (efivarfs, which no device asks for). Round 1: PCI devices in modules.alias order, each after its
	// dependencies (e1000e is already loaded). Round 2: the virtio
	// devices virtio_pci brought, and the USB stick. Nothing for the
	// unknown device or the platform serial port.
	want := []string{
		"efivarfs",
		"failover", "net_failover", "virtio", "virtio_ring", "virtio_net",
		"virtio_pci_modern_dev", "virtio_pci",
		"xhci_hcd", "xhci_pci",
		"mmc_core", "sdhci", "sdhci_pci",
		"virtio_blk", "usb_storage", "mmc_block",
	}
	if diff := cmp.Diff(want, loaded); diff != "" {
		t.Errorf("load() loaded (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, k.loads); diff != "" {
		t.Errorf("finit_module calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"virtio_net": "napi_tx=1 csum=0"}, k.params); diff != "" {
		t.Errorf("module parameters from /proc/cmdline (-want +got):\n%s", diff)
	}

	// A second call finds nothing new to load once /proc/modules says so.
	var mods strings.Builder
	for _, m := range append(loaded, "e1000e") {
		mods.WriteString(m + " 16384 0 - Live 0x0\n")
	}
	os.WriteFile(filepath.Join(root, "proc/modules"), []byte(mods.String()), 0o644)
	k.loads = nil
	again, err := load(context.Background(), testlog.New(t), Config{Root: root, Release: kver, Poll: time.Millisecond, Quiet: 30 * time.Millisecond}, k.load)
	if err != nil || len(again) != 0 || len(k.loads) != 0 {
		t.Errorf("load() again = %q, %v (finit_module %q), want nothing loaded and no error", again, err, k.loads)
	}
}

func TestLoadFailures(t *testing.T) {
	root := fakeRoot(t)
	// A Realtek NIC whose PHY soft dependency is missing from the tree
	// still loads; a driver that refuses (ENODEV) is reported; EEXIST is
	// not a failure.
	os.MkdirAll(filepath.Join(root, "sys/devices/pci0000:00/0000:00:07.0"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "sys/devices/pci0000:00/0000:00:07.0/modalias"), []byte("pci:v000010ECd00008168sv0sd0bc02sc00i00"), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{t: t, root: root, params: map[string]string{}, fail: map[string]error{
		"virtio_blk": syscall.ENODEV,
		"realtek":    syscall.ENOENT,
		"xhci_hcd":   errExist,
	}}
	loaded, err := load(context.Background(), testlog.New(t), Config{Root: root, Release: kver, Poll: time.Millisecond, Quiet: 30 * time.Millisecond}, k.load)
	if !errors.Is(err, ErrLoad) || !errors.Is(err, syscall.ENODEV) || !strings.Contains(err.Error(), "virtio_blk") {
		t.Errorf("load() error = %v, want %v naming virtio_blk with ENODEV", err, ErrLoad)
	}
	if err != nil && strings.Contains(err.Error(), "realtek") {
		t.Errorf("load() error = %v, want no word of realtek (an optional soft dependency)", err)
	}
	for _, m := range []string{"virtio_net", "r8169", "libphy", "xhci_pci", "usb_storage"} {
		if !contains(loaded, m) {
			t.Errorf("load() = %q, want it to hold %s", loaded, m)
		}
	}
	for _, m := range []string{"virtio_blk", "xhci_hcd", "realtek"} {
		if contains(loaded, m) {
			t.Errorf("load() = %q, want no %s (it failed or was loaded already)", loaded, m)
		}
	}
}

func TestLoadNoTree(t *testing.T) {
	root := t.TempDir()
	_, err := load(context.Background(), testlog.New(t), Config{Root: root, Release: kver}, func(string, string) error { return nil })
	if !errors.Is(err, ErrNoModules) {
		t.Errorf("load(empty root) error = %v, want %v", err, ErrNoModules)
	}
}

func TestMatch(t *testing.T) {
	tr := &tree{aliases: []Alias{
		{"pci:v00008086d000010D3sv*sd*bc*sc*i*", "e1000e"},
		{"pci:v*d*sv*sd*bc01sc06i01*", "ahci"},
		{"pci:v*d*sv*sd*bc01sc08i02*", "nvme"},
		{"usb:v*p*d*dc*dsc*dp*ic03isc*ip*in*", "usbhid"},
		{"pci:v00001AF4d0000100[0-9]sv*sd*bc*sc*i*", "virtio_pci"},
		{"pci:v00001AF4d*sv*sd*bc*sc*i*", "virtio_pci"},
	}}
	for _, tc := range []struct {
		dev  []string
		want []string
	}{
		{[]string{"pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00"}, []string{"e1000e"}},
		{[]string{"pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"}, []string{"ahci"}},
		{[]string{"pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"}, []string{"nvme"}},
		{[]string{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"}, []string{"virtio_pci"}},
		{[]string{"usb:v046Dp C52Bd1211dc00dsc00dp00ic03isc01ip01in00"}, []string{"usbhid"}},
		{[]string{"pci:v00008086d000010D4sv0sd0bc02sc00i00", "acpi:PNP0501:"}, nil},
		{nil, nil},
	} {
		if diff := cmp.Diff(tc.want, tr.match(tc.dev)); diff != "" {
			t.Errorf("match(%q) (-want +got):\n%s", tc.dev, diff)
		}
	}
}

func TestModuleParams(t *testing.T) {
	root := writeTree(t, map[string]string{"cmdline": "BOOT_IMAGE=/vmlinuz e1000e.IntMode=1 e1000e.SmartPowerDownEnable=0 usb-storage.quirks=0781:5583:u ip=198.18.0.2 nomodeset pxeswarm.server=http://198.18.0.1/x.y\n"})
	got := moduleParams(filepath.Join(root, "cmdline"))
	want := map[string]string{
		"e1000e":      "IntMode=1 SmartPowerDownEnable=0",
		"usb_storage": "quirks=0781:5583:u",
		"pxeswarm":    "server=http://198.18.0.1/x.y",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("moduleParams() (-want +got):\n%s", diff)
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func TestLoadBounded(t *testing.T) {
	root := fakeRoot(t)
	k := &fakeKernel{t: t, root: root, params: map[string]string{}}
	// Timeout ends the scanning even if it never gets quiet.
	start := time.Now()
	loaded, err := load(context.Background(), testlog.New(t), Config{Root: root, Release: kver, Poll: time.Millisecond, Quiet: time.Hour, Timeout: 50 * time.Millisecond}, k.load)
	if took := time.Since(start); err != nil || took > 5*time.Second || !contains(loaded, "virtio_blk") {
		t.Errorf("load(Quiet 1h, Timeout 50ms) = %q, %v after %v, want all loaded, no error, soon", loaded, err, took)
	}
	// So does the context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = load(ctx, testlog.New(t), Config{Root: root, Release: kver, Poll: time.Millisecond, Quiet: time.Hour, Timeout: time.Hour}, k.load)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("load(ctx with 50ms deadline) error = %v, want %v", err, context.DeadlineExceeded)
	}
}
