// Package needs skips a test whose outside tool is missing, and says which
// Debian package brings it. Every tool and file listed here is one that
// scripts/deps.sh installs, and `make test` runs that first
// (TestDepsInstallsEveryPackage keeps the two lists in step). With
// PXESWARM_NO_SKIP=1 in the environment, as .ci/run sets it, a missing
// tool or a run without root fails the test instead: CI never skips.
package needs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Packages maps what tests need (a command on PATH, or an absolute file
// path, globs allowed) to the Debian package that provides it.
var Packages = map[string]string{
	"sha1sum":                           "coreutils",
	"transmission-create":               "transmission-cli",
	"transmission-cli":                  "transmission-cli",
	"qbittorrent-nox":                   "qbittorrent-nox",
	"losetup":                           "mount",
	"mount":                             "mount",
	"umount":                            "mount",
	"ip":                                "iproute2",
	"lscpu":                             "util-linux",
	"lsblk":                             "util-linux",
	"free":                              "procps",
	"curl":                              "curl",
	"openssl":                           "openssl",
	"tftp":                              "tftp-hpa",
	"busybox":                           "busybox-static",
	"udhcpc":                            "udhcpc",
	"dhclient":                          "isc-dhcp-client",
	"dnsmasq":                           "dnsmasq",
	"sfdisk":                            "fdisk",
	"blkid":                             "util-linux",
	"mkswap":                            "util-linux",
	"mkfs.cramfs":                       "util-linux",
	"mke2fs":                            "e2fsprogs",
	"mkfs.ext4":                         "e2fsprogs",
	"dumpe2fs":                          "e2fsprogs",
	"debugfs":                           "e2fsprogs",
	"e2fsck":                            "e2fsprogs",
	"mkfs.vfat":                         "dosfstools",
	"fsck.fat":                          "dosfstools",
	"mcopy":                             "mtools",
	"mmd":                               "mtools",
	"mdir":                              "mtools",
	"mdel":                              "mtools",
	"mkntfs":                            "ntfs-3g",
	"ntfscp":                            "ntfs-3g",
	"ntfscat":                           "ntfs-3g",
	"ntfsls":                            "ntfs-3g",
	"ntfstruncate":                      "ntfs-3g",
	"ntfsinfo":                          "ntfs-3g",
	"ntfscluster":                       "ntfs-3g",
	"ntfsfix":                           "ntfs-3g",
	"ntfsclone":                         "ntfs-3g",
	"partclone.ext4":                    "partclone",
	"qemu-system-x86_64":                "qemu-system-x86",
	"chromium":                          "chromium", // the console's browser test (chromedp)
	"/usr/share/qemu/OVMF.fd":           "ovmf",
	"/usr/lib/ipxe/undionly.kpxe":       "ipxe",
	"/usr/lib/ipxe/ipxe.efi":            "ipxe",
	"/usr/lib/ipxe/qemu/pxe-virtio.rom": "ipxe-qemu", // the NIC ROM SeaBIOS machines PXE-boot with
	"/usr/lib/systemd/boot/efi/systemd-bootx64.efi": "systemd-boot-efi",
	"/boot/vmlinuz-*": "linux-image-amd64",
	// The Debian package's install test (build/deb).
	"dpkg":            "dpkg",
	"dpkg-deb":        "dpkg",
	"systemd-analyze": "systemd",
	"/usr/share/OVMF/OVMF_CODE_4M.secboot.fd":               "ovmf",
	"/usr/share/OVMF/OVMF_VARS_4M.ms.fd":                    "ovmf",
	"/usr/lib/shim/shimx64.efi.signed":                      "shim-signed",
	"/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed": "grub-efi-amd64-signed",
	"/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed":    "grub-efi-amd64-signed",
}

// Tool skips t unless every named command is on PATH and every named file
// (an absolute path or glob) exists. The skip names the tool and its
// package. A name missing from Packages fails the test: add it there and
// to scripts/deps.sh.
func Tool(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		pkg, ok := Packages[name]
		if !ok {
			t.Fatalf("needs.Tool(%q): not in needs.Packages; add it there and to scripts/deps.sh", name)
		}
		if !present(name) {
			skip(t, "%s missing: apt-get install %s (make test installs it)", name, pkg)
		}
	}
}

// Root skips t unless it runs as root; what names the tool that needs it
// (ip netns, losetup).
func Root(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "%s needs root (CI runs make test as root)", what)
	}
}

// NoSkipEnv, set to 1, turns every skip here into a failure.
const NoSkipEnv = "PXESWARM_NO_SKIP"

func skip(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(NoSkipEnv) == "1" {
		t.Fatalf(format+" ("+NoSkipEnv+"=1: nothing may skip)", args...)
	}
	t.Skipf(format, args...)
}

func present(name string) bool {
	if !strings.HasPrefix(name, "/") {
		_, err := exec.LookPath(name)
		return err == nil
	}
	m, _ := filepath.Glob(name)
	return len(m) > 0
}
