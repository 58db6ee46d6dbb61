package initramfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pxeswarm/pxeswarm/partition"
)

// secureBootVar is the UEFI global variable that says whether Secure
// Boot is enforced (UEFI 2.x §3.3, EFI_GLOBAL_VARIABLE GUID). efivarfs
// shows it as a file: 4 bytes of attributes, then one byte, 1 when on.
const secureBootVar = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

// Secure Boot states, as MarkSecureBoot prints them.
const (
	SecureBootOn  = "on"
	SecureBootOff = "off"
	// SecureBootNone: not booted through UEFI (BIOS), or the firmware
	// has no SecureBoot variable.
	SecureBootNone = "n/a"
)

// ReadSecureBoot reads the Secure Boot state from efivarfs at dir:
// SecureBootNone when the variable does not exist (not UEFI, or firmware
// without Secure Boot), an error when it exists but cannot be read or is
// malformed.
func ReadSecureBoot(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, secureBootVar))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return SecureBootNone, nil
	case err != nil:
		return "", fmt.Errorf("reading %s: %w", secureBootVar, err)
	case len(b) != 5:
		return "", fmt.Errorf("%s is %d bytes, want 4 bytes of attributes and 1 of data", secureBootVar, len(b))
	case b[4] == 1:
		return SecureBootOn, nil
	case b[4] == 0:
		return SecureBootOff, nil
	}
	return "", fmt.Errorf("%s holds %d, want 0 or 1", secureBootVar, b[4])
}

// readLockdown reads the kernel's lockdown mode ("none", "integrity" or
// "confidentiality": the bracketed word of securityfs's lockdown file);
// "" if the kernel does not say.
func readLockdown(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			return s[i+1 : i+j]
		}
	}
	return ""
}

// lockdownFile is securityfs's lockdown switch.
const lockdownFile = "/sys/kernel/security/lockdown"

// reportSecureBoot prints MarkSecureBoot: the firmware's Secure Boot
// state and the kernel's lockdown mode. Under Secure Boot, Debian's kernel
// locks itself down (integrity): only signed modules load, and /dev/mem,
// kexec of unsigned kernels and hibernation are refused. The agent uses
// none of those; its modules are Debian's, signed.
func (a *agent) reportSecureBoot() {
	dir := a.cfg.EFIVars
	if dir == "-" {
		return
	}
	if dir == partition.DefaultEFIVars {
		// As the stick's lookup does (local.go): only on a UEFI boot, and
		// only when nothing is mounted there yet.
		if err := mountEFIVars(dir); err != nil {
			a.log.Warn("cannot mount efivarfs: Secure Boot state unknown", "dir", dir, "err", err)
		}
	}
	if inInitramfs() {
		if err := mountSecurityFS(); err != nil {
			a.log.Debug("cannot mount securityfs: lockdown mode unknown", "err", err)
		}
	}
	state, err := ReadSecureBoot(dir)
	if err != nil {
		a.log.Warn("Secure Boot state unknown", "err", err)
		state = "unknown"
	}
	lock := readLockdown(lockdownFile)
	a.log.Info("secure boot", "state", state, "lockdown", lock)
	line := MarkSecureBoot + " " + state
	if lock != "" {
		line += " lockdown=" + lock
	}
	a.con.Println(line)
}

// inInitramfs reports whether the agent runs as the initramfs's init or
// its child (u-root's uinit): only then does it mount anything.
func inInitramfs() bool { return os.Getpid() == 1 || os.Getppid() == 1 }
