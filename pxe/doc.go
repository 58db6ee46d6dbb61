// Package pxe is the boot server: DHCP (full and proxy), TFTP, HTTP (iPXE
// scripts, kernel, initramfs, torrents, signed plans, status and admin API)
// and the per-machine tasks. Site.Start (`pxeswarm serve`) composes it with
// the image catalog (pxe/catalog), the tracker and the imager's seeding.
//
// It owns what a terminal is told (which boot file, which script, which
// plan), how a plan is signed and verified, and the agent's side of the
// same DHCP option (Discover). It does not own disks (package partition),
// the swarm (imager, tracker) or the agent (initramfs).
//
// Files, in the order a terminal meets them:
//   - dhcp.go, leases.go: DHCPv4, full and PXE proxy modes; the boot file by
//     option 93; the server URL in option 224.
//   - discover.go: the agent's client for the same option.
//   - tftp.go: read-only TFTP for the iPXE binaries.
//   - http.go, http_boot.go: iPXE scripts per MAC, kernel and initramfs,
//     torrents and web seeds, signed plans; http_api.go: agent reports, the
//     read API and the token-guarded admin API; http_images.go: the image
//     routes over the catalog (package pxe/catalog).
//   - plan.go: signed plans (ed25519) and the server's key.
//   - task.go, store.go: machines and tasks in a bbolt file.
//   - seed.go: a trusted seeder per image, following the catalog.
//   - site.go, serve.go: the site config and the composition.
package pxe
