// Package deb makes pxeswarm's Debian package with nfpm (as a library, so
// that no tool beyond Go is needed): the server binary, its systemd unit,
// a commented site config (a conffile), the terminals' kernel and
// initramfs prebuilt without a plan key (`pxeswarm serve` appends its own,
// pxe.KeyArchive), the full example config and the README; Debian's ipxe
// package is a dependency, for the iPXE binaries serve sends over TFTP.
//
// An admin who installs the package needs neither Go nor the source tree.
//
// It owns the package's layout and metadata (Config.Build). It does not
// own building what goes in: the binary (go build), the boot files
// (build.InitramfsConfig with NoKey), nor serving them (pxe).
package deb
