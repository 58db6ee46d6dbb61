//go:build !linux

package initramfs

import (
	"errors"
	"os"
)

// Reboot commands for Config.Reboot (Linux values; the agent runs only
// on Linux).
const (
	RebootRestart  = 0x1234567
	RebootPowerOff = 0x4321fedc
)

var errLinuxOnly = errors.New("the agent runs only on Linux")

func sysReboot(int) error      { return errLinuxOnly }
func syncAll()                 {}
func isTerminal(*os.File) bool { return false }

func drainTTY(*os.File) {}

func mountEFIVars(string) error { return nil }

func mountSecurityFS() error { return nil }
