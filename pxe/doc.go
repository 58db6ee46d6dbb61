// Package pxe is the boot server: DHCP (full and proxy, in package
// pxe/dhcp), TFTP, HTTP (iPXE scripts, kernel, initramfs, torrents, signed
// plans, status and admin API) and the per-machine tasks. Site.Start
// (`pxeswarm serve`) composes it with the image catalog (pxe/catalog),
// the tracker and the imager's seeding.
//
// It owns what a terminal is told (which boot file, which script, which
// plan) and how a plan is signed and verified. It does not own the DHCP
// protocol (package pxe/dhcp, which asks this package's task store whether
// a machine boots), disks (package partition), the swarm (imager, tracker)
// or the agent (initramfs, with its DHCP client initramfs/dhclient).
//
// Files, in the order a terminal meets them:
//   - dhcp/: DHCPv4, full and PXE proxy modes; the boot file by option 93;
//     the server URL in option 224; the lease file.
//   - tftp.go: read-only TFTP for the iPXE binaries, shim and GRUB;
//     grub.go: the signed UEFI chain's per-machine GRUB configs.
//   - http.go, http_boot.go: iPXE scripts per MAC, kernel and initramfs,
//     torrents and web seeds, signed plans; http_api.go: agent reports, the
//     read API and the token-guarded admin API; http_images.go: the image
//     routes over the catalog (package pxe/catalog).
//   - key.go: the server's plan-signing key (ed25519); the plan itself is
//     in package protocol.
//   - task.go, store.go: machines and tasks in a bbolt file;
//     schedule.go, store_schedule.go, scheduler.go, http_schedule.go:
//     schedules that create tasks; waker.go: Wake-on-LAN for tasks and
//     machines (the packets are package pxe/wake).
//   - console/: the web console's pages, sessions and CSRF check; the
//     admin API accepts its sessions besides the Bearer token.
//   - capture.go, http_capture.go: image capture's server side (staging
//     sparse files, resume offsets, re-hashing and publishing in the
//     catalog, versions); the uploader is package capture.
//   - seed.go: a trusted seeder per image, following the catalog.
//   - site.go, serve.go: the site config and the composition.
package pxe
