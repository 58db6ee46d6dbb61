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
//   - the kernel's NIC, disk, USB-storage and USB-keyboard drivers with
//     their dependencies under /lib/modules/<release>/, with modules.dep,
//     modules.alias and modules.softdep restricted to what is carried, for
//     initramfs/coldplug to load (not loose in /lib/modules, where u-root's
//     init would load them in no order);
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
