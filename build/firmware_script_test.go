package build

import (
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

// TestFirmwareScript runs scripts/firmware.sh (make firmware, make deb)
// against Debian's mirror and checks that what it unpacks holds every
// firmware file that the common classroom NICs' drivers of the installed
// kernel name, so an initramfs built with --firmware-dir on it carries
// them. It needs Debian's mirror, as scripts/deps.sh does.
func TestFirmwareScript(t *testing.T) {
	_, tree := hostModules(t)
	// Realtek (the most common onboard NIC), Broadcom and Intel's e100.
	drivers := []string{"r8169", "tg3", "bnx2", "bnx2x", "e100"}
	files, err := tree.moduleFiles(drivers)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if !slices.Contains(drivers, strings.TrimSuffix(path.Base(f.name), ".ko")) {
			continue
		}
		n, err := firmwareNames(f.data)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, n...)
	}
	if len(names) < 10 {
		t.Fatalf("the drivers %v name only %d firmware files: is this Debian's kernel?", drivers, len(names))
	}
	dir := t.TempDir()
	out, err := exec.Command("bash", "../scripts/firmware.sh", dir).CombinedOutput()
	t.Logf("scripts/firmware.sh:\n%s", out)
	if err != nil {
		t.Fatalf("scripts/firmware.sh: %v", err)
	}
	got, missing, err := firmwareFiles(dir, names)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Errorf("after scripts/firmware.sh, %d of the %d firmware files %v name are missing: %v", len(missing), len(names), drivers, missing)
	}
	t.Logf("%d firmware files for %v found", len(got), drivers)
}
