// Package coldplug loads the kernel modules for the hardware a terminal
// has, the job udev does on a full system: it reads every device's
// modalias under /sys/devices, matches it against modules.alias, and
// loads the matching modules with their dependencies (modules.dep) and
// soft dependencies (modules.softdep) through finit_module(2).
//
// It owns module loading in the initramfs, and the parsers of depmod's
// index files (modules.dep, modules.alias, modules.softdep,
// modules.builtin), which build/ uses too. It does not own the module
// tree (build/ writes it to /lib/modules/<release>/, restricted to the
// modules the initramfs carries) nor what to do with the devices once
// their drivers are bound (initramfs/, partition/).
//
// u-root's init loads only loose /lib/modules/*.ko files, in no
// dependency order, and u-root's kmodule resolves dependencies but does
// not read modules.alias; hence this package.
package coldplug

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Config says where the module tree and sysfs are.
type Config struct {
	// Root is the file system root; "/" on a terminal, a fake tree in
	// tests. Sysfs is read at Root/sys, loaded modules at
	// Root/proc/modules, the kernel command line at Root/proc/cmdline.
	Root string
	// Release is the kernel release whose modules to load, the folder
	// name under Root/lib/modules. Default: uname -r.
	Release string
	// Poll is how often sysfs is scanned for new devices. Default 250ms.
	Poll time.Duration
	// Quiet ends Load once this long has passed with no new device and
	// no module loaded. Drivers probe asynchronously and one driver's
	// devices need the next: xhci_pci brings a USB device, usb_storage
	// then a SCSI device (after its delay_use of 1 s), which needs sd_mod.
	// Default 2s.
	Quiet time.Duration
	// Timeout bounds Load however busy the buses stay. Default 20s.
	Timeout time.Duration
	// Always are modules loaded first whatever the hardware: ones no
	// device asks for, such as efivarfs (the boot loader's variables).
	// One missing from the tree is an error like any failed load.
	Always []string
}

// ErrNoModules means the module tree is missing (no modules.dep).
var ErrNoModules = errors.New("no kernel modules")

// ErrLoad wraps the failure to load one module.
var ErrLoad = errors.New("module load failed")

// loader loads one module file with parameters (finit_module on Linux).
type loader func(file, params string) error

// Load loads the modules the devices under Root/sys/devices ask for and
// returns the names of those it loaded, in load order. It keeps scanning
// until no new device has appeared for Config.Quiet. Modules already
// loaded or built in are skipped, so Load may be called again (for
// example while waiting for a disk, or after a USB stick is plugged in).
//
// A module that fails to load (a driver that finds no device it supports
// returns ENODEV, for example) does not stop the others: Load carries on
// and returns the failures joined, each wrapping ErrLoad, next to what
// did load. Only a missing module tree (ErrNoModules) stops it early.
func Load(ctx context.Context, log *slog.Logger, cfg Config) (loaded []string, err error) {
	return load(ctx, log, cfg, finitModule)
}

func load(ctx context.Context, log *slog.Logger, cfg Config, ld loader) ([]string, error) {
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if cfg.Release == "" {
		r, err := release()
		if err != nil {
			return nil, fmt.Errorf("coldplug: kernel release: %w", err)
		}
		cfg.Release = r
	}
	if cfg.Poll == 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	if cfg.Quiet == 0 {
		cfg.Quiet = 2 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 20 * time.Second
	}
	t, err := readTree(filepath.Join(cfg.Root, "lib/modules", cfg.Release))
	if err != nil {
		return nil, err
	}
	s := &session{cfg: cfg, log: log, tree: t, load: ld, state: map[string]state{},
		params: moduleParams(filepath.Join(cfg.Root, "proc/cmdline"))}
	s.readLoaded()
	for _, m := range cfg.Always {
		s.modprobe(NormName(m), nil)
	}
	start := time.Now()
	lastChange := start
	seen := map[string]bool{}
	for scan := 0; ; scan++ {
		aliases, err := modaliases(filepath.Join(cfg.Root, "sys/devices"))
		if err != nil {
			return s.loaded, errors.Join(append(s.errs, fmt.Errorf("coldplug: %w", err))...)
		}
		var fresh []string
		for _, a := range aliases {
			if !seen[a] {
				seen[a] = true
				fresh = append(fresh, a)
			}
		}
		before := len(s.loaded)
		for _, m := range t.match(fresh) {
			s.modprobe(m, nil)
		}
		if len(fresh) > 0 || len(s.loaded) > before {
			lastChange = time.Now()
			log.Debug("coldplug: scan", "scan", scan, "new devices", len(fresh), "loaded", s.loaded[before:])
		}
		now := time.Now()
		if now.Sub(lastChange) >= cfg.Quiet {
			break
		}
		if now.Sub(start) >= cfg.Timeout {
			log.Warn("coldplug: devices still appearing; stopped", "after", cfg.Timeout)
			break
		}
		select {
		case <-ctx.Done():
			return s.loaded, errors.Join(append(s.errs, ctx.Err())...)
		case <-time.After(cfg.Poll):
		}
	}
	return s.loaded, errors.Join(s.errs...)
}

type state int

const (
	unknown state = iota
	busy          // being loaded (a dependency cycle guard)
	done          // loaded by us or found loaded or built in
	failed
)

type session struct {
	cfg    Config
	log    *slog.Logger
	tree   *tree
	load   loader
	state  map[string]state
	params map[string]string
	loaded []string
	errs   []error
}

// readLoaded marks modules already in the kernel (Root/proc/modules) and
// built-in ones (modules.builtin) as done.
func (s *session) readLoaded() {
	for b := range s.tree.builtin {
		s.state[b] = done
	}
	data, err := os.ReadFile(filepath.Join(s.cfg.Root, "proc/modules"))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			s.state[NormName(f[0])] = done
		}
	}
}

// modprobe loads name after its dependencies and "pre" soft dependencies,
// then its "post" soft dependencies. Soft dependencies are best effort.
func (s *session) modprobe(name string, chain []string) bool {
	switch s.state[name] {
	case done:
		return true
	case failed:
		return false
	case busy:
		s.errs = append(s.errs, fmt.Errorf("%w: %s: dependency cycle %s", ErrLoad, name, strings.Join(append(chain, name), " -> ")))
		return false
	}
	file, ok := s.tree.path[name]
	if !ok {
		s.state[name] = failed
		s.errs = append(s.errs, fmt.Errorf("%w: %s: not in modules.dep (the initramfs does not carry it; add it to the build's module list)", ErrLoad, name))
		return false
	}
	s.state[name] = busy
	chain = append(chain, name)
	sd := s.tree.softdep[name]
	for _, pre := range sd.Pre {
		s.soft(name, pre, chain)
	}
	for _, d := range s.tree.deps[name] {
		if !s.modprobe(d, chain) {
			s.state[name] = failed
			s.errs = append(s.errs, fmt.Errorf("%w: %s: needs %s, which did not load", ErrLoad, name, d))
			return false
		}
	}
	if err := s.load(filepath.Join(s.tree.dir, file), s.params[name]); err != nil && !errors.Is(err, errExist) {
		s.state[name] = failed
		s.errs = append(s.errs, fmt.Errorf("%w: %s: %w", ErrLoad, name, err))
		return false
	} else if err == nil {
		s.loaded = append(s.loaded, name)
		s.log.Debug("coldplug: loaded", "module", name)
	}
	s.state[name] = done
	for _, post := range sd.Post {
		s.soft(name, post, chain)
	}
	return true
}

// soft loads the modules a soft dependency names. They are optional (an
// alias often names alternatives, such as crct10dif_pclmul, which needs a
// CPU with PCLMULQDQ, and crct10dif_generic), so failures are logged and
// not returned.
func (s *session) soft(of, target string, chain []string) {
	n := len(s.errs)
	for _, m := range s.tree.resolve(target) {
		s.modprobe(m, chain)
	}
	for _, err := range s.errs[n:] {
		s.log.Info("coldplug: optional module not loaded", "for", of, "err", err)
	}
	s.errs = s.errs[:n]
}

// modaliases reads every device's alias under devices (sysfs): its
// modalias file, or for a device without one the MODALIAS line of its
// uevent file. Some buses have no modalias attribute: an SD card or eMMC
// (mmc0:4567) says MODALIAS=mmc:block only in its uevent, and without it
// mmc_block never loads. Sysfs has symlink loops (subsystem, driver,
// ...); WalkDir does not follow links.
func modaliases(devices string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(devices, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == devices {
				return err
			}
			return nil // a device that went away mid-walk
		}
		if !d.Type().IsRegular() {
			return nil
		}
		var a string
		switch d.Name() {
		case "modalias":
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			a = strings.TrimSpace(string(b))
		case "uevent":
			if _, err := os.Lstat(filepath.Join(filepath.Dir(p), "modalias")); err == nil {
				return nil // read above or below
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			a = ueventModalias(b)
		}
		if a != "" {
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read device aliases: %w (is sysfs mounted?)", err)
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

// ueventModalias is the MODALIAS= value of a sysfs uevent file ("" if
// it has none).
func ueventModalias(b []byte) string {
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MODALIAS="); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// tree is a module folder's index files.
type tree struct {
	dir     string
	path    map[string]string   // name -> file relative to dir
	deps    map[string][]string // name -> dependency names
	builtin map[string]bool
	aliases []Alias
	softdep map[string]Softdep
}

func readTree(dir string) (*tree, error) {
	t := &tree{dir: dir, builtin: map[string]bool{}, softdep: map[string]Softdep{}}
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("coldplug: %w: %w (was the initramfs built for this kernel?)", ErrNoModules, err)
	}
	// A malformed line is passed over: load what can be loaded.
	t.path, t.deps, _ = ParseDep(dep)
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		t.builtin = ParseBuiltin(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.alias")); err == nil {
		t.aliases = ParseAliases(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.softdep")); err == nil {
		t.softdep = ParseSoftdep(b)
	}
	return t, nil
}

// match returns the modules whose alias globs match any of the device
// aliases, in modules.alias order. The globs are fnmatch(3) patterns as
// modprobe uses them; path.Match speaks the same language for these
// (no alias contains '/').
func (t *tree) match(devAliases []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range t.aliases {
		if seen[a.Module] {
			continue
		}
		for _, d := range devAliases {
			if ok, _ := path.Match(a.Pattern, d); ok {
				seen[a.Module] = true
				out = append(out, a.Module)
				break
			}
		}
	}
	return out
}

// resolve turns a soft-dependency target, a module name or an alias such
// as "crypto-crc32c", into module names in modules.dep.
func (t *tree) resolve(name string) []string {
	if _, ok := t.path[NormName(name)]; ok {
		return []string{NormName(name)}
	}
	if t.builtin[NormName(name)] {
		return nil
	}
	var out []string
	for _, a := range t.aliases {
		if ok, _ := path.Match(a.Pattern, name); ok && !slices.Contains(out, a.Module) {
			if _, present := t.path[a.Module]; present {
				out = append(out, a.Module)
			}
		}
	}
	return out
}

// moduleParams reads "module.param=value" words from the kernel command
// line: the kernel applies them to built-in code only, and modprobe
// passes them to loadable modules (modprobe(8)); so do we.
func moduleParams(cmdline string) map[string]string {
	out := map[string]string{}
	b, err := os.ReadFile(cmdline)
	if err != nil {
		return out
	}
	for _, w := range strings.Fields(string(b)) {
		mod, param, ok := strings.Cut(w, ".")
		if !ok || mod == "" || param == "" || strings.ContainsAny(mod, "=/") {
			continue
		}
		if !strings.Contains(param, "=") {
			continue
		}
		mod = NormName(mod)
		if out[mod] != "" {
			out[mod] += " "
		}
		out[mod] += param
	}
	return out
}
