#!/usr/bin/env bash
# Installs what `make test` and `make demo` need on a fresh Debian 12 machine
# with Go. Idempotent: it installs only what is missing.
set -euo pipefail
need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want sha1sum coreutils
want losetup mount
want ip iproute2
want tc iproute2
want curl curl
want openssl openssl
want udp-sender udpcast
want nft nftables
want tftp tftp-hpa
[ -e /usr/lib/ipxe/undionly.kpxe ] || need+=(ipxe)
want transmission-cli transmission-cli
want qbittorrent-nox qbittorrent-nox
# Boot server tests: real DHCP clients and an existing school DHCP server.
# (not grep -q: with pipefail, busybox would die of SIGPIPE and look missing)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -x udhcpc >/dev/null || need+=(busybox-static)
want udhcpc udhcpc
want dhclient isc-dhcp-client
want dnsmasq dnsmasq
# Partition-table cross-checks.
want sfdisk fdisk
want blkid util-linux
# Used maps (package usedmap): real filesystems to read and the tools that
# cross-check them (dumpe2fs, fsck.fat, ntfsinfo, ntfscluster).
want mke2fs e2fsprogs
want mkfs.vfat dosfstools
want mcopy mtools
want mkntfs ntfs-3g
want partclone.ext4 partclone
# Zero detection: a filesystem usedmap does not read.
want mkfs.cramfs util-linux
# The agent's inventory checked against the machine's own tools.
want lscpu util-linux
want lsblk util-linux
want free procps
# The test OS image boots with systemd-boot under OVMF.
[ -e /usr/lib/systemd/boot/efi/systemd-bootx64.efi ] || need+=(systemd-boot-efi)
# The web console's browser test drives headless Chromium (chromedp).
want chromium chromium
# QEMU machines (software emulation): SeaBIOS with iPXE NIC ROMs, OVMF for
# UEFI, and Debian's kernel for the terminals.
want qemu-system-x86_64 qemu-system-x86
[ -e /usr/share/qemu/OVMF.fd ] || need+=(ovmf)
# The signed UEFI chain `serve` hands out by default (uefi_loader = "shim"):
# Debian's Microsoft-signed shim and Debian's signed GRUB, same release.
[ -e /usr/lib/shim/shimx64.efi.signed ] || need+=(shim-signed)
[ -e /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed ] || need+=(grub-efi-amd64-signed)
[ -e /usr/share/qemu/pxe-virtio.rom ] || [ -e /usr/lib/ipxe/qemu/pxe-virtio.rom ] || need+=(ipxe-qemu)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
# The Debian package (make deb) is installed into a scratch root by dpkg
# and its unit checked by systemd-analyze verify.
want dpkg dpkg
want systemd-analyze systemd
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
		exit 1
	fi
	echo "deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
