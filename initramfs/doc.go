// Package initramfs is the terminal agent: the program u-root's init runs
// as uinit, which takes a machine from power-on to a written disk and a
// reboot with nobody at the keyboard.
//
// It owns the boot-to-reboot state machine ([Config.Run]): driver
// coldplug (through an injected function), the network (DHCP with
// dhclient.Discover on each link with a carrier, the address and default route
// configured here over netlink, the lease renewed at T1), the server URL
// (DHCP option, then pxeswarm.server= on the kernel command line: see
// [ParseCmdline]), the signed plan (refused unless it verifies against the
// key built into the initramfs), the disk step through package partition
// (list, choose, partition table), the swarm through package imager, the
// read-back check, status reports to the server every 2 s, seeding, and
// the after-action (reboot, power off or a shell). It also owns the
// console: the phase markers (markers.go) and the progress bar.
//
// On any error it prints "pxeswarm: ERROR <what> — <what to do>", reports
// the failure, dumps links, addresses and routes when the network was the
// cause, and stops at a shell: it never reboots into a half-written disk.
//
// It does not own loading kernel modules (package initramfs/coldplug),
// building the initramfs (package build), the disk rules (package
// partition), the BitTorrent engine (package imager) or the server side of
// plans and reports (package pxe).
package initramfs
