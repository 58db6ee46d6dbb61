package needs

import (
	"os"
	"regexp"
	"testing"
)

// TestDepsInstallsEveryPackage: every package a skip names is one that
// scripts/deps.sh (run by make test) installs.
func TestDepsInstallsEveryPackage(t *testing.T) {
	b, err := os.ReadFile("../../scripts/deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	installed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)(?:^want \S+ (\S+)$|need\+=\(([^)]+)\))`).FindAllStringSubmatch(string(b), -1) {
		installed[m[1]+m[2]] = true
	}
	for tool, pkg := range Packages {
		if !installed[pkg] {
			t.Errorf("%s comes from %s, which scripts/deps.sh does not install", tool, pkg)
		}
	}
}

// TestPresent: commands on PATH and files (globs) are found, missing
// ones are not.
func TestPresent(t *testing.T) {
	for name, want := range map[string]bool{"sh": true, "no-such-tool-pxs": false, "/usr/*": true, "/no/such/file-*": false} {
		if got := present(name); got != want {
			t.Errorf("present(%q) = %v, want %v", name, got, want)
		}
	}
}
