package qemu_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	. "github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// TestDirectBoot boots Debian's kernel with the marker initramfs: the
// harness sees markers in order and the machine powers itself off.
func TestDirectBoot(t *testing.T) {
	needs.Tool(t, "qemu-system-x86_64", "/boot/vmlinuz-*")
	kernel, err := build.NewestKernel(build.DefaultBoot)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	initrd, err := BuildMarkerInitramfs(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	vm, err := Config{Name: "direct", Kernel: kernel, Initramfs: initrd,
		Append: "console=ttyS0 panic=-1 quiet pxeswarm.test=yes", Timeout: 2 * time.Minute}.Boot(ctx, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	if _, err := vm.Expect(InitMarker, time.Minute); err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, vm.Console())
	}
	line, err := vm.Expect("pxeswarm-test: cmdline", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "pxeswarm.test=yes") {
		t.Errorf("cmdline line = %q, want it to hold pxeswarm.test=yes", line)
	}
	if err := vm.Wait(); err != nil {
		t.Errorf("Wait() = %v, want a clean power-off", err)
	}
	// A marker that never comes fails fast once the machine is gone.
	if _, err := vm.Expect("never printed", 5*time.Second); err == nil {
		t.Error("Expect(never printed) = nil after exit, want an error")
	}
}
