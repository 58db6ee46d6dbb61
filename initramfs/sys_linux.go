package initramfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// Reboot commands for Config.Reboot (reboot(2), linux/reboot.h).
const (
	RebootRestart  = unix.LINUX_REBOOT_CMD_RESTART
	RebootPowerOff = unix.LINUX_REBOOT_CMD_POWER_OFF
)

// sysReboot flushes every filesystem and block device, then restarts or
// powers off the machine. It returns only on failure.
func sysReboot(cmd int) error {
	unix.Sync()
	return unix.Reboot(cmd)
}

// syncAll flushes every dirty page of every file and block device
// (sync(2)): the image is on stable storage once it returns.
func syncAll() { unix.Sync() }

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// drainTTY waits until what was written to f has left the terminal (a
// serial console drains slowly; a reboot right after a write loses the
// tail, the "rebooting" marker included). tcdrain(3) is TCSBRK with a
// non-zero argument.
func drainTTY(f *os.File) {
	_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
}

// mountEFIVars mounts efivarfs read-only on dir if the machine booted
// through UEFI and nothing is mounted there yet (u-root's init does not
// mount it). Errors are for the log: without it the stick is found by its
// kernel command line instead.
func mountEFIVars(dir string) error {
	if _, err := os.Stat("/sys/firmware/efi"); err != nil {
		return nil // not booted through UEFI
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil // already mounted
	}
	return unix.Mount("efivarfs", dir, "efivarfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

// mountSecurityFS mounts securityfs (which shows the lockdown mode) if
// it is not mounted yet.
func mountSecurityFS() error {
	if _, err := os.Stat(lockdownFile); err == nil {
		return nil
	}
	return unix.Mount("securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}
