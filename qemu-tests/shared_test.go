package qemutests

import (
	"crypto/ed25519"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/pxe"
)

// TestMain removes what the tests share (sharedBuild) after the last.
func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// shared is the one pxeswarm binary and agent initramfs of this test
// binary: building the initramfs takes minutes under CI's two cores
// (u-root, the agent, xz over 324 modules), so the classrooms share one.
// It is built as the Debian package builds its boot files, with no plan
// key (--key none), and the key archive is appended as `pxeswarm serve`
// appends it to the packaged initramfs (pxe.KeyArchive). So every QEMU
// boot checks that the kernel unpacks the appended archive: an agent
// without a key writes nothing. Each classroom's server gets a copy of
// the one key pair.
var shared struct {
	once             sync.Once
	dir              string
	bin, boot, state string
	err              string
}

// sharedBuild returns the shared pxeswarm binary, the boot folder
// (vmlinuz, initramfs) and the state folder holding the key pair it was
// built with (plan-key, plan-key.pub).
func sharedBuild(t *testing.T) (bin, boot, keyState string) {
	t.Helper()
	kernel := requireTools(t)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "pxeswarm-qemu-shared-")
		if err != nil {
			shared.err = err.Error()
			return
		}
		shared.dir = dir
		shared.bin = filepath.Join(dir, "pxeswarm")
		cmd := exec.Command("go", "build", "-o", shared.bin, "../cmd/pxeswarm")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			shared.err = "go build: " + err.Error() + "\n" + string(out)
			return
		}
		shared.boot, shared.state = filepath.Join(dir, "boot"), filepath.Join(dir, "state")
		packaged := filepath.Join(dir, "packaged")
		start := time.Now()
		out, err := exec.Command(shared.bin, "build", "initramfs", "--out", packaged, "--kernel", kernel,
			"--key", "none").CombinedOutput()
		if err != nil {
			shared.err = "pxeswarm build initramfs: " + err.Error() + "\n" + string(out)
			return
		}
		t.Logf("shared initramfs built in %v (once for every QEMU test):\n%s", time.Since(start).Round(time.Second), out)
		if err := appendKey(packaged, shared.boot, shared.state); err != nil {
			shared.err = err.Error()
		}
	})
	if shared.err != "" {
		t.Fatal(shared.err)
	}
	return shared.bin, shared.boot, shared.state
}

// appendKey makes a key pair in state and writes to boot the packaged
// vmlinuz and initramfs from packaged with the key's archive appended:
// the bytes a packaged server sends (Site.usePackagedBoot).
func appendKey(packaged, boot, state string) error {
	key, err := pxe.LoadOrCreateKey(state)
	if err != nil {
		return err
	}
	archive, err := pxe.KeyArchive(key.Public().(ed25519.PublicKey))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(boot, 0o755); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(packaged, "vmlinuz"), filepath.Join(boot, "vmlinuz")); err != nil {
		return err
	}
	initramfs, err := os.ReadFile(filepath.Join(packaged, "initramfs"))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(boot, "initramfs"), append(initramfs, archive...), 0o644)
}

// copyKey puts the shared plan-key pair into a server's state folder.
func copyKey(t *testing.T, state string) {
	t.Helper()
	_, _, from := sharedBuild(t)
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"plan-key", "plan-key.pub"} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TierEnv selects the QEMU tests' tier: unset, CI's covering subset;
// "full", every test (make test-qemu-full). See the README's "Testing in
// QEMU".
const TierEnv = "PXESWARM_QEMU_TIER"

// extendedTier skips a test outside the full tier: one whose parts the
// covering subset already boots (the same firmware, loader and DHCP
// modes) in another combination, kept out of CI's time budget.
func extendedTier(t *testing.T) {
	t.Helper()
	if os.Getenv(TierEnv) != "full" {
		t.Skipf("extended QEMU tier: %s=full (make test-qemu-full) runs it; CI runs the covering subset", TierEnv)
	}
}
