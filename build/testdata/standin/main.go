// Command standin is a stand-in for the pxeswarm agent in build's QEMU
// smoke test: built as u-root's uinit, it loads the drivers for the
// machine's devices (initramfs/coldplug), prints what it finds with stable
// markers, and powers the machine off.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/initramfs/coldplug"
	"golang.org/x/sys/unix"
)

// Markers; keep in sync with build's smoke test.
const (
	markerStart   = "pxeswarm-standin: running"
	markerLoaded  = "pxeswarm-standin: loaded"
	markerErr     = "pxeswarm-standin: load errors"
	markerNet     = "pxeswarm-standin: net"
	markerBlock   = "pxeswarm-standin: block"
	markerKey     = "pxeswarm-standin: key"
	markerUname   = "pxeswarm-standin: uname"
	markerShell   = "pxeswarm-standin: shell"
	markerPowerOf = "pxeswarm-standin: power off"
)

func main() {
	fmt.Println(markerStart)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	loaded, err := coldplug.Load(ctx, log, coldplug.Config{Root: "/"})
	fmt.Println(markerLoaded, strings.Join(loaded, " "))
	if err != nil {
		fmt.Println(markerErr, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	// Drivers register their devices as they probe; give the ones named
	// by standin.wait=eth0,vda on the kernel command line a moment.
	for i := 0; i < 100 && !allExist(waitFor()); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Println(markerNet, list("/sys/class/net"))
	fmt.Println(markerBlock, list("/sys/block"))
	key, err := os.ReadFile("/etc/pxeswarm/plan-key.pub")
	if err != nil {
		fmt.Println(markerKey, "ERROR", err)
	} else {
		fmt.Println(markerKey, strings.TrimSpace(string(key)))
	}
	// The busybox works: a u-root command and the rescue shell run.
	out, err := exec.Command("/bbin/uname", "-r").CombinedOutput()
	fmt.Println(markerUname, strings.TrimSpace(string(out)), errString(err))
	out, err = exec.Command("/bin/sh", "-c", "echo shell-ok $((6*7))").CombinedOutput()
	fmt.Println(markerShell, strings.TrimSpace(string(out)), errString(err))
	fmt.Println(markerPowerOf)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// waitFor reads standin.wait= from the kernel command line.
func waitFor() []string {
	b, _ := os.ReadFile("/proc/cmdline")
	for _, w := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(w, "standin.wait="); ok {
			return strings.Split(v, ",")
		}
	}
	return nil
}

// allExist says whether every name is a network interface or a block
// device.
func allExist(names []string) bool {
	for _, n := range names {
		if !exists("/sys/class/net/"+n) && !exists("/sys/block/"+n) {
			return false
		}
	}
	return true
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func list(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "ERROR " + err.Error()
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return "ERROR " + err.Error()
}
