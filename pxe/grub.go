package pxe

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// The Secure Boot chain for x86-64 UEFI: the firmware loads Debian's
// Microsoft-signed shim, shim loads Debian's signed GRUB (the netboot
// image), GRUB loads Debian's signed kernel (shim's verifier checks it,
// not the initramfs) with our initramfs. This file owns what GRUB reads:
// a bootstrap grub.cfg and the per-machine config that makes the same
// decision as the iPXE script (task: our kernel; no task: back to the
// firmware, which boots the disk).
//
// Names, the same over TFTP (relative to the TFTP root) and HTTP
// (relative to the public URL), so every loader finds its next file
// beside itself:
//
//	shimx64.efi         (TFTP) and /boot/shimx64.efi (HTTP): the firmware's boot file
//	grubx64.efi         (TFTP) and /boot/grubx64.efi (HTTP): shim's DEFAULT_LOADER,
//	                    loaded from shim's own directory
//	grub/grub.cfg       GRUB's netboot image has prefix "/grub" on the server
//	                    its DHCP ACK names; its built-in config sources
//	                    $prefix/x86_64-efi/grub.cfg if it exists (we
//	                    serve none), else $prefix/grub.cfg
//	grub/<mac>.cfg      per machine, mac as GRUB's $net_default_mac
//	                    (52:54:00:12:34:56)
//	boot/vmlinuz, boot/initramfs: what the per-machine config loads
const (
	// LoaderShim is the signed chain (shim, GRUB, Debian's kernel): boots
	// with Secure Boot on and off. The default for UEFI.
	LoaderShim = "shim"
	// LoaderIPXE is Debian's iPXE (unsigned): UEFI PCs need Secure Boot
	// off.
	LoaderIPXE = "ipxe"

	// ShimName and GrubName are the loaders' names on the wire.
	ShimName = "shimx64.efi"
	GrubName = "grubx64.efi"
	// IPXEName is where HTTP serves iPXE (HTTPConfig.IPXE) for UEFI HTTP
	// boot with the ipxe loader.
	IPXEName = "ipxe.efi"
	// DefaultShim and DefaultGrub are where Debian's shim-signed and
	// grub-efi-amd64-signed packages put them. shim and GRUB must come
	// from the same Debian release: shim checks GRUB's SBAT generation.
	DefaultShim = "/usr/lib/shim/shimx64.efi.signed"
	DefaultGrub = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
)

// grubBootstrap is grub/grub.cfg: it chains the machine's own config.
// GRUB sets $net_default_mac from the NIC it booted from.
const grubBootstrap = `set timeout=0
echo "pxeswarm: asking for ${net_default_mac}'s boot config"
configfile ${prefix}/${net_default_mac}.cfg
echo "pxeswarm: no boot config for ${net_default_mac}; booting local disk"
exit 1
`

// grubFile answers a GRUB config name (relative to the TFTP root or
// the HTTP public URL, without a leading slash): the bootstrap or a
// machine's config. ok is false for other names.
func (s *bootServer) grubFile(name, client string) (body []byte, ok bool) {
	rest, isGrub := strings.CutPrefix(strings.TrimLeft(name, "/"), "grub/")
	if !isGrub {
		return nil, false
	}
	if rest == "grub.cfg" {
		return []byte(grubBootstrap), true
	}
	raw, isCfg := strings.CutSuffix(rest, ".cfg")
	if !isCfg || strings.Contains(raw, "/") {
		return nil, false
	}
	mac, err := protocol.ParseMAC(raw)
	if err != nil {
		return nil, false
	}
	return []byte(s.grubMachine(mac, client)), true
}

// grubMachine is a machine's GRUB config: the same decision as
// serveScript.
func (s *bootServer) grubMachine(mac, client string) string {
	task, ok, err := s.backend.ActiveTask(mac)
	switch {
	case err != nil:
		s.log.Error("grub: looking up task; sending local-disk config", "mac", mac, "err", err)
		return grubLocalDisk(mac, "server error looking up its task (see the server log)")
	case !ok || !task.State.Active():
		s.log.Info("grub: no task; local disk", "mac", mac, "client", client)
		return grubLocalDisk(mac, "no task")
	}
	s.log.Info("grub: agent config", "mac", mac, "client", client, "task", task.ID, "state", task.State, "image", task.Image)
	var b bytes.Buffer
	fmt.Fprintf(&b, "set timeout=0\n")
	fmt.Fprintf(&b, "echo 'pxeswarm: task %s for %s: image %s'\n", task.ID, mac, strings.ReplaceAll(task.Image, "'", ""))
	// Paths are on $root, the server GRUB booted from (TFTP, or HTTP
	// for UEFI HTTP boot).
	fmt.Fprintf(&b, "linux /boot/vmlinuz %s\n", strings.Join(s.kernelArgs(mac, task), " "))
	fmt.Fprintf(&b, "initrd /boot/initramfs\n")
	fmt.Fprintf(&b, "boot\n")
	return b.String()
}

// grubLocalDisk boots the local disk from GRUB: the first EFI system
// partition with Windows' boot manager or the removable-media loader
// (EFI/BOOT/BOOTX64.EFI), chainloaded; firmware checks its signature as
// it would at power-on. GRUB's "exit" is not enough: Debian's GRUB 2.06
// returns success to the firmware, and OVMF then opened its setup menu
// instead of trying the disk (seen in TestSecureBootPXEProxy, where the
// school's DHCP hands every UEFI machine shim). exit stays as the last
// resort, for a disk without either loader. root is set to the ESP first:
// chainloader gives the loaded image the device of $root, not of the
// file (with root still on the network, the disk's shim looked for its
// GRUB on the NIC and failed).
func grubLocalDisk(mac, why string) string {
	return fmt.Sprintf(`echo 'pxeswarm: %s for %s, booting local disk'
for loader in /EFI/Microsoft/Boot/bootmgfw.efi /EFI/BOOT/BOOTX64.EFI; do
	if search --no-floppy --file --set=esp $loader; then
		echo "pxeswarm: chainloading ($esp)$loader"
		set root=$esp
		chainloader $loader
		boot
	fi
done
echo 'pxeswarm: no EFI loader on any disk; back to the firmware'
exit 1
`, why, mac)
}

// kernelArgs is the kernel command line of a machine with a task, the
// same for iPXE and GRUB (iPXE adds initrd=initramfs, see agentScript).
// pxeswarm.server is the agent's fallback when DHCP does not carry the
// server URL option.
func (s *bootServer) kernelArgs(mac string, t Task) []string {
	var args []string
	if c := strings.TrimSpace(s.cfg.Cmdline); c != "" {
		args = append(args, c)
	}
	return append(args, "pxeswarm.server="+s.cfg.PublicURL, "pxeswarm.mac="+mac, "pxeswarm.task="+t.ID)
}

// serveGrub answers GET /grub/{file}: GRUB's configs for UEFI HTTP boot.
func (s *bootServer) serveGrub(w http.ResponseWriter, r *http.Request) {
	body, ok := s.grubFile("grub/"+r.PathValue("file"), remoteIP(r))
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no GRUB file %q: want grub.cfg or <mac>.cfg", protocol.Clip(r.PathValue("file"), 60)))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}

// TFTPFiles are the boot server's files for the TFTP server beside it
// (TFTPConfig.Files and Generate): the signed loaders, kernel and
// initramfs, and GRUB's configs made per request. Empty paths are left
// out.
func (s *bootServer) TFTPFiles() (files map[string]string, generate func(name, client string) ([]byte, bool)) {
	files = map[string]string{}
	for name, path := range map[string]string{ShimName: s.cfg.Shim, GrubName: s.cfg.Grub, "boot/vmlinuz": s.cfg.Kernel, "boot/initramfs": s.cfg.Initramfs} {
		if path != "" {
			files[name] = path
		}
	}
	return files, s.grubFile
}
