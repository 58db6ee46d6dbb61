// Command markerinit is a stand-in /init for boot tests: it proves that a
// machine got as far as running our initramfs. It prints a stable marker and
// the kernel command line to the console, then powers the machine off.
//
// The boot-server tests (issue #4) use it so they do not depend on the real
// agent; the classroom tests boot the real initramfs instead.
package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Marker is what the tests wait for; keep it in sync with qemu.InitMarker.
const Marker = "pxeswarm-test: initramfs running"

func main() {
	_ = os.MkdirAll("/proc", 0o755)
	_ = os.MkdirAll("/dev", 0o755)
	_ = syscall.Mount("proc", "/proc", "proc", 0, "")
	_ = syscall.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		cmdline = []byte("(unreadable: " + err.Error() + ")")
	}
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		con = os.Stdout
	}
	fmt.Fprintf(con, "\n%s\npxeswarm-test: cmdline %s\n", Marker, cmdline)
	// As the test OS on an imaged disk (build.TestOSConfig), say so with
	// the digest its loader entry carries.
	for _, f := range strings.Fields(string(cmdline)) {
		if d, ok := strings.CutPrefix(f, "pxeswarm.testos="); ok {
			fmt.Fprintf(con, "NEW SYSTEM BOOTED %s\n", d)
		}
	}
	syscall.Sync()
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
