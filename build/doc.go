// Package build makes what pxeswarm ships to machines: the terminals' boot
// pair, the USB rescue stick (usb.go), and test OS images for the
// end-to-end tests (testos.go).
//
// The boot pair (InitramfsConfig.Build) is a kernel (Debian's
// linux-image-amd64 by default) and a u-root initramfs holding
//
//   - u-root's init and a busybox of rescue-shell commands (/bbin),
//     compiled from u-root v0.16.0 with gobusybox;
//   - the pxeswarm agent as /bin/uinit (init runs it, then the shell);
//   - the kernel's drivers (DefaultModules: folders, globs and names over
//     the kernel's module tree): every wired Ethernet driver and the
//     common USB Ethernet ones, every boot-disk driver of a PC or virtual
//     machine (SATA/IDE, NVMe and VMD, SCSI/SAS HBAs and RAID, virtio,
//     Hyper-V, VMware, eMMC/SD, USB storage), USB keyboards, with their
//     dependencies under /lib/modules/<release>/ and modules.dep,
//     modules.alias and modules.softdep restricted to what is carried, for
//     initramfs/coldplug to load (not loose in /lib/modules, where u-root's
//     init would load them in no order). Modules are carried unpacked:
//     coldplug loads them with finit_module(2), and Debian's kernel has no
//     CONFIG_MODULE_DECOMPRESS; the initramfs as a whole is compressed;
//   - the firmware files those drivers name (modinfo's firmware=) that
//     the build host has in /lib/firmware; the build says which are
//     missing (Result.Drivers);
//   - the server's public plan key at /etc/pxeswarm/plan-key.pub.
//
// The output is reproducible: Go binaries are built with -trimpath, no
// symbols and no build ID, for GOAMD64=v1 without cgo; the cpio archive is
// sorted with fixed inode numbers, times and owners; compression is pure Go
// and deterministic. The same inputs give the same bytes.
//
// It owns assembling images. It does not own what runs in them (initramfs/,
// cmd/pxeswarm-agent), module loading at boot (initramfs/coldplug) nor
// serving them (pxe/).
package build
