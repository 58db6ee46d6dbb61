package qemutests

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// matrixRow is one machine of the hardware matrix: its firmware, NIC
// model and the controller of its one blank disk, and what the agent
// must see of them: the disk's kernel name (the target it writes), and
// in the inventory the NIC's driver and the disk's model and bus as the
// kernel reads them from what QEMU emulates.
type matrixRow struct {
	name  string
	fw    qemu.Firmware
	nic   qemu.NIC
	bus   qemu.Bus
	mac   string
	stick bool // boots the rescue stick instead of PXE (see the row)

	disk   string // kernel name: vda, sda, nvme0n1, mmcblk0; "" for an sdX beside the stick (the one on invBus)
	driver string // the NIC's Linux driver
	model  string // the disk's model ("" for virtio-blk, which has none)
	invBus string // protocol.Bus*
}

// matrixCI is the covering subset CI runs (TestMatrix): each firmware
// boot path the other rows do not take, the two NIC families OVMF and
// SeaBIOS drive through iPXE ROMs, the USB NIC, and the disk buses whose
// names differ from sdX (NVMe, SD) plus SATA.
var matrixCI = []matrixRow{
	// SeaBIOS PXE through e1000e's iPXE ROM (undionly.kpxe, then HTTP).
	{name: "bios-e1000e-nvme", fw: qemu.BIOS, nic: qemu.E1000E, bus: qemu.NVMe, mac: "52:54:00:c9:00:01",
		disk: "nvme0n1", driver: "e1000e", model: "QEMU NVMe Ctrl", invBus: protocol.BusNVMe},
	// OVMF has no e1000 driver: the NIC's iPXE ROM (its UEFI image)
	// gives OVMF the network interface its PXE client runs on.
	{name: "uefi-e1000-ahci", fw: qemu.UEFI, nic: qemu.E1000, bus: qemu.AHCI, mac: "52:54:00:c9:00:02",
		disk: "sda", driver: "e1000", model: "QEMU HARDDISK", invBus: protocol.BusATA},
	// No firmware here PXE-boots through a USB NIC (SeaBIOS and OVMF
	// have no USB network driver), so this machine boots the rescue
	// stick (network mode) from USB; the agent gets its lease and the
	// server through the USB NIC (Linux configures QEMU's usb-net as CDC
	// Ethernet: cdc_ether). The SD card has no sysfs modalias file, only
	// its uevent's MODALIAS=mmc:block, which coldplug reads.
	{name: "stick-usbnet-sd", fw: qemu.UEFI, nic: qemu.USBNet, bus: qemu.SD, mac: "52:54:00:c9:00:03", stick: true,
		disk: "mmcblk0", driver: "cdc_ether", model: "QEMU!", invBus: protocol.BusMMC},
}

// matrixFull is the rest (TestMatrixFull, extended tier).
var matrixFull = []matrixRow{
	// Secure Boot runs only signed code, so no iPXE ROM: OVMF's own
	// virtio-net driver, then shim, GRUB and the signed kernel.
	{name: "secboot-virtio-vscsi", fw: qemu.SecureBoot, nic: qemu.VirtioNet, bus: qemu.VirtioSCSI, mac: "52:54:00:c9:00:11",
		disk: "sda", driver: "virtio_net", model: "QEMU HARDDISK", invBus: protocol.BusSCSI},
	// OVMF through vmxnet3's iPXE ROM, then shim and GRUB (the
	// classroom serves shim to every UEFI machine).
	{name: "uefi-vmxnet3-vblk", fw: qemu.UEFI, nic: qemu.VMXNET3, bus: qemu.VirtioBlk, mac: "52:54:00:c9:00:12",
		disk: "vda", driver: "vmxnet3", invBus: protocol.BusVirtio},
	// QEMU's rtl8139 is an 8139C+: 8139too leaves it to 8139cp.
	{name: "bios-rtl8139-megasas", fw: qemu.BIOS, nic: qemu.RTL8139, bus: qemu.MegaSAS, mac: "52:54:00:c9:00:13",
		disk: "sda", driver: "8139cp", model: "QEMU HARDDISK", invBus: protocol.BusSCSI},
	// iPXE's pcnet driver (ipxe-qemu's ROM) got its script and then sat
	// on the kernel's HTTP download for 6 minutes under SeaBIOS (seen in
	// this test's first run, four machines on two cores), so this
	// machine boots the rescue stick and the kernel's pcnet32 drives the
	// card. The stick and the LSI disk are both sdX, in probe order: the
	// target is the SCSI one.
	{name: "stick-pcnet-lsi", fw: qemu.UEFI, nic: qemu.PCNet, bus: qemu.LSI, mac: "52:54:00:c9:00:14", stick: true,
		driver: "pcnet32", model: "QEMU HARDDISK", invBus: protocol.BusSCSI},
}

// TestMatrix is the hardware matrix's covering subset: machines with
// different firmware, NIC models and disk controllers in one classroom,
// imaged at once. Each writes the disk its agent names as QEMU's
// controller makes the kernel name it (nvme0n1, sda, mmcblk0), the disk
// matches the image byte for byte once the server has its task done, and
// the machine's inventory on the server shows its NIC driver and its
// disk's model and bus. The README's "Testing in QEMU" has the table.
func TestMatrix(t *testing.T) {
	c := newClassroom(t, "mtx", "full")
	runMatrix(t, c, matrixCI)
}

// TestMatrixFull is the rest of the matrix (extended tier): Secure Boot,
// virtio-net, vmxnet3, rtl8139, pcnet; virtio-scsi, virtio-blk, megasas,
// lsi. Its classroom serves shim and GRUB to UEFI machines (the only
// loader Secure Boot runs).
func TestMatrixFull(t *testing.T) {
	extendedTier(t)
	needSecureBoot(t)
	c := newClassroom(t, "mtf", "full", "--uefi-loader", "shim")
	runMatrix(t, c, matrixFull)
}

// runMatrix boots every row at once and checks each.
func runMatrix(t *testing.T, c *classroom, rows []matrixRow) {
	start := time.Now()
	vms := make([]*vm, len(rows))
	for i, r := range rows {
		vms[i] = c.newVM(t, r.name, r.fw, r.mac)
	}
	var mu sync.Mutex
	targets := map[string]string{} // row → the disk its agent wrote
	t.Run("imaging", func(t *testing.T) {
		for i, r := range rows {
			v := vms[i]
			t.Run(r.name, func(t *testing.T) {
				t.Parallel()
				m := c.startMatrix(t, v, r)
				expect(t, v, m, 6*time.Minute, initramfs.MarkVersion)
				if r.stick {
					expect(t, v, m, 2*time.Minute, initramfs.MarkStick)
				}
				expect(t, v, m, 3*time.Minute, initramfs.MarkLease, initramfs.MarkPlan)
				line := expect(t, v, m, 2*time.Minute, initramfs.MarkTarget)
				want := r.disk
				if want == "" {
					want = "sd"
				}
				if !strings.Contains(line, initramfs.MarkTarget+" /dev/"+want) {
					t.Errorf("%s: target line %q, want /dev/%s", r.name, line, want)
				}
				mu.Lock()
				targets[r.name] = strings.TrimPrefix(strings.Fields(strings.TrimPrefix(line[strings.Index(line, initramfs.MarkTarget):], initramfs.MarkTarget))[0], "/dev/")
				mu.Unlock()
				expect(t, v, m, 2*time.Minute, initramfs.MarkTable, initramfs.MarkWriting)
				expect(t, v, m, 10*time.Minute, initramfs.MarkImageDone)
				expect(t, v, m, 2*time.Minute, initramfs.MarkReboot)
				if err := m.Wait(); err != nil {
					t.Errorf("%s: QEMU after the agent's reboot: %v", r.name, err)
				}
			})
		}
	})
	t.Logf("%d machines imaged in %v", len(rows), time.Since(start).Round(time.Second))
	tasks := c.tasks(t)
	for i, r := range rows {
		v := vms[i]
		if task := tasks[r.mac]; task.State != protocol.TaskDone {
			t.Errorf("%s: task %s is %q, want done", r.name, task.ID, task.State)
			continue
		}
		c.checkDisk(t, v)
		c.checkInventory(t, r, targets[r.name])
	}
}

// startMatrix boots a matrix machine: PXE first through its NIC, or from
// a rescue stick (network mode) on USB.
func (c *classroom) startMatrix(t *testing.T, v *vm, r matrixRow) *qemu.VM {
	t.Helper()
	cfg := qemu.Config{Name: v.name, Firmware: v.fw, Memory: 768, NetNS: c.lan.NS.Name, Tap: v.tap, MAC: v.mac, NIC: r.nic,
		BootNetwork: !r.stick, Disks: []qemu.Disk{{Path: v.disk, Bus: r.bus}}, Timeout: 20 * time.Minute, Console: &v.console,
		FirmwareLog: v.disk + ".fw.log", Vars: v.vars}
	if r.stick {
		stick := c.buildStick(t, r.name+"-stick.img")
		cfg.Disks = append([]qemu.Disk{{Path: stick, USB: true, BootIndex: 1}}, cfg.Disks...)
	}
	m, err := cfg.Boot(c.ctx, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Kill() })
	return m
}

// checkInventory reads the machine's inventory from the server (GET
// /api/machines/{mac}) and checks its NIC and target disk.
func (c *classroom) checkInventory(t *testing.T, r matrixRow, target string) {
	t.Helper()
	var ms pxe.MachineStatus
	if err := json.Unmarshal([]byte(admin(t, c.lan.NS, c.token, "GET", "/api/machines/"+r.mac, "")), &ms); err != nil {
		t.Fatal(err)
	}
	inv := ms.Inventory
	if inv == nil {
		t.Errorf("%s: the server has no inventory", r.name)
		return
	}
	i := slices.IndexFunc(inv.NICs, func(n protocol.NICInfo) bool { return n.MAC == r.mac })
	if i < 0 {
		t.Errorf("%s: no NIC with MAC %s in the inventory: %+v", r.name, r.mac, inv.NICs)
	} else if got := inv.NICs[i].Driver; got != r.driver {
		t.Errorf("%s: NIC %s driver %q, want %q", r.name, inv.NICs[i].Name, got, r.driver)
	}
	j := slices.IndexFunc(inv.Disks, func(d protocol.DiskInfo) bool { return d.Name == target })
	if j < 0 {
		t.Errorf("%s: no disk %q (the target) in the inventory: %+v", r.name, target, inv.Disks)
		return
	}
	d := inv.Disks[j]
	if d.Model != r.model || d.Bus != r.invBus || d.SizeBytes != 128<<20 {
		t.Errorf("%s: disk %+v, want model %q, bus %q, 128 MiB", r.name, d, r.model, r.invBus)
	}
	t.Logf("%s: inventory NIC %s driver %s; disk %s model %q bus %s firmware %s secure boot %q", r.name, inv.NICs[i].Name,
		inv.NICs[i].Driver, d.Name, d.Model, d.Bus, inv.Firmware, inv.SecureBoot)
	if want := map[qemu.Firmware]string{qemu.BIOS: protocol.FirmwareBIOS, qemu.UEFI: protocol.FirmwareUEFI, qemu.SecureBoot: protocol.FirmwareUEFI}[r.fw]; inv.Firmware != want {
		t.Errorf("%s: inventory firmware %q, want %q", r.name, inv.Firmware, want)
	}
}

// TestMatrixCovers: together the two tiers boot each firmware, NIC model
// and disk controller at least once (the rescue stick's USB disk aside).
func TestMatrixCovers(t *testing.T) {
	fws, nics, buses := map[qemu.Firmware]bool{}, map[qemu.NIC]bool{}, map[qemu.Bus]bool{}
	for _, r := range append(slices.Clone(matrixCI), matrixFull...) {
		fws[r.fw], nics[r.nic], buses[r.bus] = true, true, true
	}
	var missing []string
	for _, f := range []qemu.Firmware{qemu.BIOS, qemu.UEFI, qemu.SecureBoot} {
		if !fws[f] {
			missing = append(missing, string(f))
		}
	}
	for _, n := range qemu.NICs {
		if !nics[n] {
			missing = append(missing, string(n))
		}
	}
	for _, b := range qemu.Buses {
		if !buses[b] && b != qemu.USBStorage {
			missing = append(missing, string(b))
		}
	}
	if len(missing) > 0 {
		t.Errorf("the matrix never boots %s", strings.Join(missing, ", "))
	}
}
