// Package initramfs is the terminal agent: the program u-root's init runs
// as uinit, which takes a machine from power-on to a written disk and a
// reboot with nobody at the keyboard.
//
// It owns the boot-to-reboot state machine ([Config.Run]): driver
// coldplug (through an injected function), the network (DHCP with
// dhclient.Discover on each link with a carrier, the address and default
// route configured here over netlink, the lease renewed at T1), the server
// URL (DHCP option, then pxeswarm.server= on the kernel command line: see
// [ParseCmdline]), the signed plan (refused unless it verifies against the
// key built into the initramfs, and carried out by its action), status
// reports to the server every 2 s (the first on the task with the
// machine's inventory, read from sysfs, procfs and efivarfs:
// inventory.go), and the after-action (reboot, power off or a shell). It also owns the console: the phase markers (markers.go)
// and the progress bar.
//
// Writing an image is one sequence (write.go) whichever way the bytes
// come: choose the target, make or map the partition table, open the
// partitions (package partition), fill them from the swarm (package
// imager; agent.go) or from the rescue stick (local.go), read the image
// back, seed, close.
//
// A capture plan goes the other way (capture.go): the disk the plan's
// target names is opened read-only and its used bytes go to the server's
// capture through package capture, with the plan's secret; the task is
// reported done once the server has published the image. Secure Boot and
// the kernel's lockdown are read from efivarfs and securityfs
// (secureboot.go).
//
// On any error it prints "pxeswarm: ERROR <what> — <what to do>", reports
// the failure, dumps links, addresses and routes when the network was the
// cause, and stops at a shell: it never reboots into a half-written disk.
//
// It does not own loading kernel modules (package initramfs/coldplug),
// building the initramfs (package build), the disk rules (package
// partition), the BitTorrent engine (package imager), the wire format of
// plans and reports (package protocol) or the server (package pxe, which
// the agent never links).
package initramfs
