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
want udp-sender udpcast
want nft nftables
want tftp tftp-hpa
[ -e /usr/lib/ipxe/undionly.kpxe ] || need+=(ipxe)
want transmission-cli transmission-cli
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
