// Package qemu runs QEMU machines for pxeswarm's boot tests and the virtual
// classroom. It follows hugelgupf/vmtest's design: the serial console is a
// pty, a test expects console markers in order (each with its own
// deadline), the whole machine has a hard timeout, `-no-reboot` is set and
// the QEMU command line is logged so a run can be reproduced.
//
// Software emulation (TCG) is the default: on these machines QEMU with KVM
// hangs or aborts. Set PXESWARM_QEMU_KVM=1 to try KVM.
//
// It owns the QEMU process and its console. It does not own the network it
// is attached to (the caller makes the namespace, bridge and tap).
package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Firmware picks the machine's firmware.
type Firmware string

const (
	// BIOS is SeaBIOS with the NIC's iPXE option ROM (Debian's ipxe-qemu),
	// as on a PC whose network card has a PXE ROM.
	BIOS Firmware = "bios"
	// UEFI is OVMF with its own network stack and PXE (the NIC's option
	// ROM is turned off), as on a current UEFI PC.
	UEFI Firmware = "uefi"
	// SecureBoot is OVMF with Secure Boot on and Microsoft's keys enrolled
	// (OVMF_CODE_4M.secboot.fd with a copy of OVMF_VARS_4M.ms.fd in
	// Config.Vars), on a q35 machine with SMM, as a PC shipped with
	// Secure Boot on: it runs only loaders signed by a key in db
	// (Microsoft's UEFI CA signs Debian's shim).
	SecureBoot Firmware = "uefi-secboot"
)

// Secure Boot firmware from Debian's ovmf package.
const (
	OVMFSecureCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	OVMFMSVars     = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
)

// CopyVars copies the Microsoft-keys variable store (OVMFMSVars) into dir
// for one SecureBoot machine (the firmware writes to it) and returns the
// copy's path.
func CopyVars(dir string) (string, error) {
	b, err := os.ReadFile(OVMFMSVars)
	if err != nil {
		return "", fmt.Errorf("qemu: Secure Boot variables: %w (install Debian's ovmf package)", err)
	}
	p := filepath.Join(dir, "OVMF_VARS.fd")
	return p, os.WriteFile(p, b, 0o644)
}

// Default firmware files from Debian's ovmf package.
const OVMF = "/usr/share/qemu/OVMF.fd"

// NIC is the model of a machine's network card, as QEMU names the device.
type NIC string

// NIC models. Which firmware PXE-boots through which (checked with
// Debian's seabios, ovmf and ipxe-qemu):
//
//   - SeaBIOS: every PCI model, through the iPXE PXE ROM QEMU loads
//     for it (ipxe-qemu's efi-<model>.rom, which holds both a BIOS and
//     a UEFI image).
//   - OVMF: VirtioNet through OVMF's own VirtioNetDxe (the ROM is turned
//     off, as on a UEFI PC whose firmware drives its NIC); OVMF has no
//     driver for the others, so for them the ROM's UEFI image (iPXE
//     built as a UEFI NIC driver, like a real card's UNDI driver) gives
//     OVMF the network interface its PXE client runs on.
//   - OVMF with Secure Boot: only VirtioNet, since OVMF refuses to run an
//     unsigned option ROM (ipxe-qemu's are unsigned).
//   - USBNet: no firmware here PXE-boots through a USB NIC (SeaBIOS and
//     OVMF have no USB network driver), so Args refuses BootNetwork with
//     it; a machine with one boots the rescue stick, which finds the
//     server by DHCP through it.
const (
	VirtioNet NIC = "virtio-net-pci" // the default
	E1000     NIC = "e1000"          // Intel 82540EM; Linux e1000
	E1000E    NIC = "e1000e"         // Intel 82574L; Linux e1000e
	RTL8139   NIC = "rtl8139"        // Realtek 8139C+; Linux 8139cp
	VMXNET3   NIC = "vmxnet3"        // VMware's paravirtual NIC
	PCNet     NIC = "pcnet"          // AMD PCnet-PCI II; Linux pcnet32
	USBNet    NIC = "usb-net"        // a USB CDC Ethernet/RNDIS adapter on the xHCI bus
)

// NICs are the NIC models Args knows.
var NICs = []NIC{VirtioNet, E1000, E1000E, RTL8139, VMXNET3, PCNet, USBNet}

// Bus is the controller a disk hangs off.
type Bus string

// Disk controllers. Each kind gets one controller for all its disks.
const (
	VirtioBlk  Bus = "virtio-blk"  // virtio-blk-pci: /dev/vda (the default)
	VirtioSCSI Bus = "virtio-scsi" // virtio-scsi-pci + scsi-hd: /dev/sda
	AHCI       Bus = "ahci"        // ich9-ahci + ide-hd (SATA): /dev/sda
	NVMe       Bus = "nvme"        // nvme: /dev/nvme0n1
	MegaSAS    Bus = "megasas"     // LSI MegaRAID SAS 1078 + scsi-hd: /dev/sda
	LSI        Bus = "lsi"         // LSI 53C895A + scsi-hd: /dev/sda
	SD         Bus = "sd"          // sdhci-pci + sd-card: /dev/mmcblk0; one per machine; the size must be a power of two
	USBStorage Bus = "usb"         // qemu-xhci + usb-storage: /dev/sda
)

// Buses are the disk controllers Args knows.
var Buses = []Bus{VirtioBlk, VirtioSCSI, AHCI, NVMe, MegaSAS, LSI, SD, USBStorage}

// scsiController returns the QEMU device and controller id of a SCSI
// bus; its disks are scsi-hd devices on that controller.
func scsiController(bus Bus) (dev, id string) {
	switch bus {
	case MegaSAS:
		return "megasas", "megasas"
	case LSI:
		return "lsi53c895a", "lsi"
	default: // VirtioSCSI
		return "virtio-scsi-pci", "vscsi"
	}
}

// Disk is one disk of a machine.
type Disk struct {
	Path   string
	Format string // "raw" (default) or "qcow2"
	// Serial shows up as /dev/disk/by-id/virtio-<serial> on virtio-blk;
	// an NVMe disk needs one, and gets "pxeswarm<N>" when it is empty.
	Serial string
	// Bus is the disk's controller; "" is VirtioBlk.
	Bus Bus
	// USB attaches the disk as a USB mass-storage stick (Bus USBStorage).
	USB bool
	// BootIndex, if above 0, puts the disk in the firmware's boot order
	// (bootindex): 1 boots it first, as a person picking the stick in
	// the boot menu would. An SD card has no boot index.
	BootIndex int
}

// Config describes one machine.
type Config struct {
	// Name labels logs.
	Name     string
	Firmware Firmware
	// Memory in MiB; default 512. CPUs; default 1.
	Memory int
	CPUs   int
	// Kernel, Initramfs and Append boot Linux directly (no firmware boot
	// path). Leave Kernel empty to boot through the firmware.
	Kernel    string
	Initramfs string
	Append    string
	// BootNetwork tries PXE first, then the disks (in order).
	BootNetwork bool
	// NetNS runs QEMU inside this network namespace (ip netns exec), so
	// Tap can live there.
	NetNS string
	// Tap is the tap device for the NIC (created by the caller); empty
	// means no network.
	Tap string
	// MAC of the NIC, e.g. "52:54:00:12:34:56".
	MAC string
	// NIC is the network card's model; "" is VirtioNet.
	NIC   NIC
	Disks []Disk
	// Timeout kills the machine; default 5 minutes.
	Timeout time.Duration
	// Console, if set, receives a copy of everything on the serial console.
	Console io.Writer
	// FirmwareLog, if set, is a file that receives the firmware's debug
	// console (I/O port 0x402: SeaBIOS prints "Booting from Hard Disk…"
	// there, which its serial console does not show).
	FirmwareLog string
	// Vars is the UEFI variable store of a SecureBoot machine, a copy of
	// OVMFMSVars (CopyVars); required for SecureBoot.
	Vars string
	// Extra arguments for QEMU.
	Extra []string
}

// VM is a running machine.
type VM struct {
	cfg    Config
	cmd    *exec.Cmd
	args   []string
	in     io.Writer // the console pty's master
	cancel context.CancelFunc

	mu      sync.Mutex
	out     bytes.Buffer
	cursor  int
	changed chan struct{}
	done    chan struct{}
	waitErr error
}

// KVM reports whether the environment asks for KVM (PXESWARM_QEMU_KVM=1).
func KVM() bool { return os.Getenv("PXESWARM_QEMU_KVM") == "1" }

// Args builds the QEMU command line (without the binary).
func (c Config) Args() ([]string, error) {
	mem, cpus := c.Memory, c.CPUs
	if mem == 0 {
		mem = 512
	}
	if cpus == 0 {
		cpus = 1
	}
	accel := "tcg"
	if KVM() {
		accel = "kvm"
	}
	a := []string{
		"-accel", accel, "-m", fmt.Sprint(mem), "-smp", fmt.Sprint(cpus),
		"-display", "none", "-monitor", "none", "-serial", "stdio",
		"-no-reboot", "-nodefaults", "-no-user-config",
	}
	switch c.Firmware {
	case BIOS, "":
	case UEFI:
		if _, err := os.Stat(OVMF); err != nil {
			return nil, fmt.Errorf("qemu: UEFI firmware %s: %w (install Debian's ovmf package)", OVMF, err)
		}
		// No IPv6 PXE: there is no DHCPv6 on our test networks, and
		// each attempt costs about a minute before the next boot entry.
		a = append(a, "-bios", OVMF, "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
	case SecureBoot:
		if _, err := os.Stat(OVMFSecureCode); err != nil {
			return nil, fmt.Errorf("qemu: Secure Boot firmware %s: %w (install Debian's ovmf package)", OVMFSecureCode, err)
		}
		if c.Vars == "" {
			return nil, fmt.Errorf("qemu: a Secure Boot machine needs Config.Vars, a copy of %s (CopyVars)", OVMFMSVars)
		}
		// The secure build keeps its variables in SMM: q35 with SMM on
		// and the flash only writable from SMM.
		a = append(a, "-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFSecureCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+c.Vars,
			"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
	default:
		return nil, fmt.Errorf("qemu: unknown firmware %q: use %q, %q or %q", c.Firmware, BIOS, UEFI, SecureBoot)
	}
	if c.Kernel != "" {
		a = append(a, "-kernel", c.Kernel, "-append", c.Append)
		if c.Initramfs != "" {
			a = append(a, "-initrd", c.Initramfs)
		}
	}
	uefi := c.Firmware == UEFI || c.Firmware == SecureBoot
	// One controller per kind, added before its first device.
	controllers := map[string]bool{}
	controller := func(dev, id string) {
		if !controllers[id] {
			a = append(a, "-device", dev+",id="+id)
			controllers[id] = true
		}
	}
	if c.Tap != "" {
		nic := c.NIC
		if nic == "" {
			nic = VirtioNet
		}
		if !slices.Contains(NICs, nic) {
			return nil, fmt.Errorf("qemu: unknown NIC model %q: use one of %v", nic, NICs)
		}
		if nic == USBNet && c.BootNetwork {
			return nil, fmt.Errorf("qemu: no firmware here PXE-boots through a USB NIC (%s): boot a rescue stick instead of BootNetwork", USBNet)
		}
		a = append(a, "-netdev", "tap,id=n0,ifname="+c.Tap+",script=no,downscript=no")
		dev := string(nic) + ",netdev=n0"
		if nic == USBNet {
			controller("qemu-xhci", "xhci")
			dev += ",bus=xhci.0"
		}
		if c.MAC != "" {
			dev += ",mac=" + c.MAC
		}
		if uefi && nic == VirtioNet {
			// OVMF's own virtio-net driver and PXE, like a UEFI PC's
			// firmware; the iPXE ROM would take over the NIC instead.
			// Other models keep their ROM: OVMF has no driver for them.
			dev += ",romfile="
		}
		if c.BootNetwork {
			// bootindex, not -boot order: OVMF otherwise puts a disk
			// that has an ESP before the network.
			dev += ",bootindex=1"
		}
		a = append(a, "-device", dev)
	}
	units := map[Bus]int{}
	for i, d := range c.Disks {
		f := d.Format
		if f == "" {
			f = "raw"
		}
		bus := d.Bus
		switch {
		case d.USB && bus != "" && bus != USBStorage:
			return nil, fmt.Errorf("qemu: disk %s: USB is set and Bus is %q: set one", d.Path, bus)
		case d.USB:
			bus = USBStorage
		case bus == "":
			bus = VirtioBlk
		}
		if !slices.Contains(Buses, bus) {
			return nil, fmt.Errorf("qemu: disk %s: unknown bus %q: use one of %v", d.Path, bus, Buses)
		}
		unit := units[bus]
		units[bus]++
		id := fmt.Sprintf("d%d", i)
		a = append(a, "-drive", fmt.Sprintf("file=%s,format=%s,if=none,id=%s", d.Path, f, id))
		var dev string
		switch bus {
		case VirtioBlk:
			dev = "virtio-blk-pci,drive=" + id
		case USBStorage:
			controller("qemu-xhci", "xhci")
			dev = "usb-storage,bus=xhci.0,drive=" + id
		case VirtioSCSI, MegaSAS, LSI:
			hba, hbaID := scsiController(bus)
			controller(hba, hbaID)
			dev = "scsi-hd,bus=" + hbaID + ".0,drive=" + id
		case AHCI:
			if unit >= 6 {
				return nil, fmt.Errorf("qemu: disk %s: an AHCI controller has 6 ports; this is the 7th AHCI disk", d.Path)
			}
			controller("ich9-ahci", "ahci")
			dev = fmt.Sprintf("ide-hd,bus=ahci.%d,drive=%s", unit, id)
		case NVMe:
			dev = "nvme,drive=" + id
			if d.Serial == "" {
				d.Serial = fmt.Sprintf("pxeswarm%d", i)
			}
		case SD:
			if unit > 0 {
				return nil, fmt.Errorf("qemu: disk %s: one SD card per machine", d.Path)
			}
			if d.BootIndex > 0 {
				return nil, fmt.Errorf("qemu: disk %s: an SD card has no boot index", d.Path)
			}
			controller("sdhci-pci", "sdhci")
			dev = "sd-card,drive=" + id
		}
		if d.Serial != "" && bus != SD {
			dev += ",serial=" + d.Serial
		}
		switch {
		case bus == SD:
		case d.BootIndex > 0:
			dev += fmt.Sprintf(",bootindex=%d", d.BootIndex)
		case c.BootNetwork && bus != USBStorage:
			dev += fmt.Sprintf(",bootindex=%d", 2+i)
		}
		a = append(a, "-device", dev)
	}
	if c.FirmwareLog != "" {
		a = append(a, "-chardev", "file,id=fwlog,path="+c.FirmwareLog, "-device", "isa-debugcon,iobase=0x402,chardev=fwlog")
	}
	return append(a, c.Extra...), nil
}

// Boot launches the machine. The returned VM must be Waited for or Killed.
func (c Config) Boot(ctx context.Context, log *slog.Logger) (*VM, error) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return nil, fmt.Errorf("qemu: %w (install Debian's qemu-system-x86 package)", err)
	}
	args, err := c.Args()
	if err != nil {
		return nil, err
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Minute
	}
	argv := append([]string{"qemu-system-x86_64"}, args...)
	if c.NetNS != "" {
		argv = append([]string{"ip", "netns", "exec", c.NetNS}, argv...)
	}
	master, slave, err := openPTY()
	if err != nil {
		return nil, fmt.Errorf("qemu: console pty: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.WaitDelay = 5 * time.Second
	// If the test process dies (timeout, ^C) the machine must not outlive
	// it: one did, for an hour, after an interrupted run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	log.Info("qemu: starting", "name", c.Name, "cmd", shellQuote(argv))
	if err := cmd.Start(); err != nil {
		cancel()
		master.Close()
		slave.Close()
		return nil, fmt.Errorf("qemu: start: %w", err)
	}
	slave.Close()
	vm := &VM{cfg: c, cmd: cmd, args: argv, in: master, cancel: cancel, changed: make(chan struct{}), done: make(chan struct{})}
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 32<<10)
		for {
			n, err := master.Read(buf)
			if n > 0 {
				vm.mu.Lock()
				vm.out.Write(buf[:n])
				if c.Console != nil {
					c.Console.Write(buf[:n])
				}
				close(vm.changed)
				vm.changed = make(chan struct{})
				vm.mu.Unlock()
			}
			if err != nil { // EIO once QEMU has exited
				return
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		<-read
		master.Close()
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("qemu: %s killed after its %v timeout: %w", c.Name, c.Timeout, ctx.Err())
		}
		vm.mu.Lock()
		vm.waitErr = err
		vm.mu.Unlock()
		close(vm.done)
		cancel()
	}()
	return vm, nil
}

// Type sends s to the machine's serial console, as if typed there (a
// menu's answer, a shell command).
func (vm *VM) Type(s string) error {
	_, err := io.WriteString(vm.in, s)
	return err
}

// CommandLine is the command as run, quoted for a shell.
func (vm *VM) CommandLine() string { return shellQuote(vm.args) }

// Console returns everything the machine printed so far.
func (vm *VM) Console() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.out.String()
}

// ErrExited is returned by Expect when the machine stopped before the
// marker appeared.
var ErrExited = errors.New("machine exited")

// Expect waits until marker appears on the console after the previous
// match. It returns the console line holding the marker.
func (vm *VM) Expect(marker string, timeout time.Duration) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		vm.mu.Lock()
		rest := vm.out.Bytes()[vm.cursor:]
		if i := bytes.Index(rest, []byte(marker)); i >= 0 {
			start := bytes.LastIndexByte(rest[:i], '\n') + 1
			end := bytes.IndexByte(rest[i:], '\n')
			if end < 0 {
				select {
				case <-vm.done:
				default:
					// Wait for the rest of the line (bounded by the
					// deadline), so callers can parse it.
					changed := vm.changed
					vm.mu.Unlock()
					select {
					case <-changed:
						continue
					case <-vm.done:
						continue
					case <-deadline.C:
						return "", fmt.Errorf("waiting for the end of the line holding %q on %s: not seen within %v", marker, vm.cfg.Name, timeout)
					}
				}
				end = len(rest)
			} else {
				end += i
			}
			line := strings.TrimRight(string(rest[start:end]), "\r")
			vm.cursor += i + len(marker)
			vm.mu.Unlock()
			return line, nil
		}
		changed := vm.changed
		vm.mu.Unlock()
		select {
		case <-changed:
		case <-vm.done:
			// One last look: output may have arrived with the exit.
			vm.mu.Lock()
			found := bytes.Contains(vm.out.Bytes()[vm.cursor:], []byte(marker))
			vm.mu.Unlock()
			if found {
				continue
			}
			return "", fmt.Errorf("waiting for %q: %s %w (%v)", marker, vm.cfg.Name, ErrExited, vm.err())
		case <-deadline.C:
			return "", fmt.Errorf("waiting for %q on %s: not seen within %v", marker, vm.cfg.Name, timeout)
		}
	}
}

func (vm *VM) err() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.waitErr
}

// Wait waits for QEMU to exit (the guest powered off, or the timeout).
func (vm *VM) Wait() error {
	<-vm.done
	return vm.err()
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Kill stops the machine and waits for it.
func (vm *VM) Kill() error {
	vm.cancel()
	<-vm.done
	return nil
}

func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t'\"$\\;&|<>*?()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
