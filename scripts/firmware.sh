#!/bin/bash
# firmware.sh DIR: put the NIC and disk-controller firmware that Debian
# ships into DIR (a /lib/firmware tree) for `pxeswarm build initramfs
# --firmware-dir DIR`, without touching this host's apt sources or
# /lib/firmware.
#
# Debian keeps the firmware that Realtek, Broadcom, Intel and other NICs
# load in its non-free-firmware component, which a host installed without
# it (like a CI image) cannot apt-get. This script downloads the packages
# from the same Debian mirror and release as the host's own apt sources,
# with a private apt state in DIR/.apt, and unpacks them with dpkg-deb.
# The initramfs builder then carries only the files the carried drivers
# name (modinfo's firmware=), not the whole packages.
#
# Used by `make deb` (the package's prebuilt initramfs) and `make
# initramfs FIRMWARE=1`. Re-running reuses what was downloaded.
set -euo pipefail

dir=${1:?usage: scripts/firmware.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
state=$dir/.apt

# The packages holding what the carried drivers name (see the build's
# "missing firmware" line): Realtek (rtl_nic), Broadcom (bnx2, bnx2x,
# tigon), Intel (e100, ice), QLogic, Chelsio, Myricom and NetXen NICs, and
# firmware-linux-free (3com, ...). Left out: firmware-netronome and
# firmware-cavium, the data-centre SmartNICs' firmware (Netronome Agilio
# 25 MiB, Cavium LiquidIO 4.9 MiB of what the drivers name): the
# initramfs unpacks into the terminal's RAM, and no classroom has them.
# Measured with Debian 12's kernel: 86 files, 9.8 MiB unpacked; the boot
# payload grows from 31.3 to 36.2 MiB (budget 40 MiB). With the two it
# was 37.4 MiB but 30 MiB more RAM.
packages=(firmware-realtek firmware-bnx2 firmware-bnx2x firmware-misc-nonfree
	firmware-qlogic firmware-netxen firmware-myricom firmware-linux-free)

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
mirror=http://deb.debian.org/debian
# The host's own Debian mirror, if its sources name one.
for f in /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	u=$(awk '/^URIs:/ {print $2; exit}' "$f")
	case "$u" in */debian) mirror=$u; break ;; esac
done
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$dir/.debs"
echo "deb [signed-by=$keyring] $mirror $codename main non-free-firmware" >"$state/sources.list"
apt=(-o Dir::Etc::SourceList="$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache"
	-o Dir::State::status=/dev/null -o Debug::NoLocking=1 -o APT::Sandbox::User=root)

if ! ls "$state/lists/"*_InRelease >/dev/null 2>&1; then
	echo "firmware: reading the package lists of $mirror $codename (main, non-free-firmware)"
	if ! apt-get "${apt[@]}" -qq update; then
		echo "firmware: cannot read $mirror: the firmware packages need Debian's mirror (or a local one named in /etc/apt/sources.list.d)" >&2
		exit 1
	fi
fi
cd "$dir/.debs"
for p in "${packages[@]}"; do
	if ls "${p}"_*.deb >/dev/null 2>&1; then
		continue
	fi
	if ! apt-get "${apt[@]}" -qq download "$p"; then
		echo "firmware: $p could not be downloaded from $mirror $codename; its NICs' firmware will be missing" >&2
	fi
done
for deb in ./*.deb; do
	dpkg-deb -x "$deb" "$dir/.root"
done
# The packages install into /lib/firmware (usrmerge: /usr/lib/firmware).
for fw in "$dir/.root/lib/firmware" "$dir/.root/usr/lib/firmware"; do
	[ -d "$fw" ] && cp -a "$fw/." "$dir/"
done
rm -rf "$dir/.root"
echo "firmware: $(find "$dir" -path "$dir/.apt" -prune -o -path "$dir/.debs" -prune -o -type f -print | wc -l) files in $dir from: ${packages[*]}"
