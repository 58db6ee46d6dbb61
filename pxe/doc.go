// Package pxe is the boot server: DHCP (full and proxy), TFTP, HTTP (iPXE
// scripts, kernel, initramfs, torrents, signed plans, status API) and the
// per-machine tasks. `pxeswarm serve` composes it with the tracker and the
// imager's seeding.
//
// It owns what a terminal is told (which boot file, which plan) and how a
// plan is signed and verified. It does not own disks (package partition),
// the swarm (imager, tracker) or the agent (initramfs).
//
// Built so far: signed plans (plan.go) and the read-only TFTP server
// (tftp.go). DHCP, HTTP, tasks and serve are the next steps (issue #4).
package pxe
