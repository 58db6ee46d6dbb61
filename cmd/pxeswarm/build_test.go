package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/needs"
)

// TestBuildInitramfsCommand runs `pxeswarm build initramfs` as `make build`
// builds it (-trimpath, which leaves runtime.GOROOT empty) with the
// build package's stand-in agent, and checks its usage errors.
func TestBuildInitramfsCommand(t *testing.T) {
	needs.Tool(t, "/boot/vmlinuz-*")
	dir := t.TempDir()
	trimmed := filepath.Join(dir, "pxeswarm")
	if out, err := exec.Command("go", "build", "-trimpath", "-o", trimmed, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -trimpath: %v\n%s", err, out)
	}
	seed := sha256.Sum256([]byte("cmd build test"))
	key := filepath.Join(dir, "plan-key.pub")
	os.WriteFile(key, []byte(base64.StdEncoding.EncodeToString(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))+"\n"), 0o644)
	boot := filepath.Join(dir, "boot")

	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(trimmed, args...)
		out, err := cmd.CombinedOutput()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	out, code := run("build", "initramfs", "--out", boot, "--key", key, "--agent", "github.com/pxeswarm/pxeswarm/build/testdata/standin", "--log-level", "warn")
	if code != 0 {
		t.Fatalf("pxeswarm build initramfs: exit %d\n%s", code, out)
	}
	for _, name := range []string{"vmlinuz", "initramfs"} {
		if st, err := os.Stat(filepath.Join(boot, name)); err != nil || st.Size() < 1<<20 {
			t.Errorf("%s after the build: %v, %v; want a file over 1 MiB", name, st, err)
		}
	}
	for _, want := range []string{"kernel     " + filepath.Join(boot, "vmlinuz"), "initramfs  " + filepath.Join(boot, "initramfs"), "drivers    modules: ", "total "} {
		if !strings.Contains(out, want) {
			t.Errorf("pxeswarm build initramfs printed %q, want a line with %q", out, want)
		}
	}

	// The rescue stick from that pair (any file stands in for
	// systemd-boot): a console with a comma stays whole.
	stick := filepath.Join(dir, "stick.img")
	out, code = run("build", "usb", "--out", stick, "--boot-dir", boot, "--systemd-boot", key, "--console", "ttyS0,115200", "--server", "http://198.18.0.1:8080/")
	if code != 0 {
		t.Fatalf("pxeswarm build usb: exit %d\n%s", code, out)
	}
	for _, want := range []string{"mode network", "console=ttyS0,115200 panic=-1", "pxeswarm.server=http://198.18.0.1:8080\n", "sudo dd if=" + stick + " of=/dev/sdX"} {
		if !strings.Contains(out, want) {
			t.Errorf("pxeswarm build usb printed %q, want %q", out, want)
		}
	}

	for _, tc := range []struct {
		args []string
		code int
		say  string
	}{
		{[]string{"build"}, 2, "Targets:"},
		{[]string{"build", "iso"}, 2, "unknown target"},
		{[]string{"build", "usb"}, 2, "need --out"},
		{[]string{"build", "usb", "--out", filepath.Join(dir, "x.img"), "--boot-dir", boot, "--systemd-boot", key, "--mode", "local"}, 1, "local mode needs an image"},
		{[]string{"build", "usb", "--out", filepath.Join(dir, "x.img"), "--boot-dir", dir}, 1, "pxeswarm build initramfs"},
		{[]string{"build", "initramfs", "--out", boot, "--key", filepath.Join(dir, "nope.pub")}, 1, "--key"},
		{[]string{"build", "initramfs", "--compress", "lz4"}, 2, "want one of"},
		{[]string{"build", "initramfs", "extra"}, 2, "unexpected arguments"},
	} {
		out, code := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.say) {
			t.Errorf("pxeswarm %s = exit %d, %q; want exit %d saying %q", strings.Join(tc.args, " "), code, out, tc.code, tc.say)
		}
	}
}
