package coldplug

import (
	"fmt"
	"path"
	"strings"
)

// This file reads the index files depmod(8) writes next to the modules
// (/lib/modules/<release>/modules.*). Load reads them at boot; build/
// reads the build host's to pick the modules the initramfs carries, and
// uses these parsers so that both sides read the files alike.

// ModuleName is the name the kernel and modprobe know a module file by:
// "kernel/drivers/usb/storage/usb-storage.ko.xz" is "usb_storage". Any
// compression suffix after ".ko" is dropped.
func ModuleName(file string) string {
	base := path.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return NormName(base)
}

// NormName makes a module name comparable with ModuleName: modprobe
// treats '-' and '_' in module names alike, so both become '_'.
func NormName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// ParseDep reads a modules.dep, one "path: dep-path dep-path ..." line a
// module, paths relative to the modules folder. It returns each module's
// path and the names of the modules it needs, keyed by module name.
// Blank lines and '#' comments are skipped. A line without ':' is
// skipped too, and the error names the first one: a caller that wants
// depmod's output and nothing else rejects the file, one that makes do
// with what it could read ignores the error.
func ParseDep(b []byte) (files map[string]string, deps map[string][]string, err error) {
	files, deps = map[string]string{}, map[string][]string{}
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, needs, ok := strings.Cut(line, ":")
		if !ok {
			if err == nil {
				err = fmt.Errorf("line %d: %q has no ':' (not a modules.dep made by depmod)", n+1, line)
			}
			continue
		}
		name := ModuleName(file)
		files[name] = strings.TrimSpace(file)
		for _, d := range strings.Fields(needs) {
			deps[name] = append(deps[name], ModuleName(d))
		}
	}
	return files, deps, err
}

// ParseBuiltin reads a modules.builtin: one module a line, as depmod's
// path ("kernel/lib/crc32c.ko") or as a bare name. It returns the set of
// module names.
func ParseBuiltin(b []byte) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Fields(string(b)) {
		out[ModuleName(l)] = true
	}
	return out
}

// Alias is one line of modules.alias: devices or names matching Pattern,
// an fnmatch(3) glob, are driven by Module.
type Alias struct{ Pattern, Module string }

// ParseAliases reads a modules.alias: "alias <glob> <module>" lines, in
// file order. Other lines (comments, malformed ones) are skipped.
func ParseAliases(b []byte) []Alias {
	var out []Alias
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "alias" {
			out = append(out, Alias{Pattern: f[1], Module: NormName(f[2])})
		}
	}
	return out
}

// Softdep is a module's soft dependencies: modules or aliases to load,
// if they can be, before it (Pre) and after it (Post).
type Softdep struct{ Pre, Post []string }

// ParseSoftdep reads a modules.softdep (or modprobe.d(5) softdep lines):
// "softdep <module> pre: a b post: c" lines. Targets before any "pre:" or
// "post:" count as pre (depmod writes "softdep cifs gcm" meaning pre).
// Several lines for one module add up. It returns the soft dependencies
// keyed by module name (see NormName); targets are kept as written, since
// they may be aliases. Other lines are skipped.
func ParseSoftdep(b []byte) map[string]Softdep {
	out := map[string]Softdep{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "softdep" {
			continue
		}
		name := NormName(f[1])
		sd := out[name]
		list := &sd.Pre
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				list = &sd.Pre
			case "post:":
				list = &sd.Post
			default:
				*list = append(*list, w)
			}
		}
		out[name] = sd
	}
	return out
}
