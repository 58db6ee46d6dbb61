package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// Defaults for InitramfsConfig.
const (
	// DefaultAgent is the Go command run as u-root's uinit.
	DefaultAgent = "github.com/pxeswarm/pxeswarm/cmd/pxeswarm-agent"
	// DefaultPublicKey is where `pxeswarm serve` keeps its public plan key
	// (pxe.LoadOrCreateKey in the default state folder).
	DefaultPublicKey = "/var/lib/pxeswarm/plan-key.pub"
	// DefaultShell is the rescue shell, a u-root command.
	DefaultShell = "gosh"
	// DefaultBoot is where Debian installs its kernels.
	DefaultBoot = "/boot"
)

// Names of the files Build writes into OutDir; `pxeswarm serve` serves
// <state_dir>/boot/vmlinuz and <state_dir>/boot/initramfs by default.
const (
	KernelFile    = "vmlinuz"
	InitramfsFile = "initramfs"
)

// Paths inside the initramfs.
const (
	// PublicKeyPath holds the server's ed25519 public plan key, as written
	// to plan-key.pub (read it with protocol.ParsePublicKey).
	PublicKeyPath = "/etc/pxeswarm/plan-key.pub"
	// ModulesRoot holds lib/modules/<kver>/ with modules.dep,
	// modules.alias, modules.softdep and modules.builtin restricted to
	// the carried modules (initramfs/coldplug loads from there).
	ModulesRoot = "/lib/modules"
)

// DefaultCommands are the u-root commands in the initramfs's busybox: init
// and what a rescue shell needs. build/dependencies.go lists the same
// packages so that `go mod tidy` keeps them.
var DefaultCommands = []string{
	"init", "gosh",
	"ls", "cat", "cp", "mv", "ln", "rm", "mkdir", "more", "echo", "hexdump", "dd",
	"mount", "umount", "df", "blkid", "sync",
	"dmesg", "ps", "kill", "free", "uname", "sleep", "pci",
	"insmod", "rmmod", "lsmod",
	"ip", "ping", "dhclient",
	"poweroff", "shutdown",
}

// uroot is where u-root's core commands live.
const uroot = "github.com/u-root/u-root/cmds/core/"

// InitramfsConfig says what goes into a terminal's boot files: a kernel
// and a u-root initramfs whose uinit is the pxeswarm agent. Build writes
// OutDir/vmlinuz and OutDir/initramfs; a rebuild from the same inputs
// writes the same bytes.
type InitramfsConfig struct {
	// OutDir receives KernelFile and InitramfsFile (created if missing).
	// Required. `pxeswarm serve` reads <state_dir>/boot by default.
	OutDir string

	// Kernel is the x86 bzImage to ship. Default: the newest
	// /boot/vmlinuz-* (Debian's linux-image-amd64).
	Kernel string
	// ModulesDir is the kernel's module tree (modules.dep and the .ko
	// files). Default: /lib/modules/<release>, the release read from the
	// kernel image itself.
	ModulesDir string
	// KernelConfig is the kernel's .config, read to pick the compression
	// and to check that the partition-table parsers are built in.
	// Default: /boot/config-<release> if it exists.
	KernelConfig string
	// Modules are the module names to carry; their dependencies come
	// along. Default: DefaultModules. Built-in names are skipped.
	Modules []string
	// FirmwareDir is where the firmware the carried modules name
	// (MODULE_FIRMWARE) is looked for; what is there goes in at
	// /lib/firmware. Default: /lib/firmware; "none" carries none. Some
	// Realtek and Broadcom NICs need Debian's non-free firmware-realtek,
	// firmware-bnx2 or firmware-misc-nonfree packages installed.
	FirmwareDir string

	// PublicKey is the server's public plan key file (plan-key.pub in the
	// server's state folder). Required to exist; it is checked with
	// protocol.ParsePublicKey and goes in at PublicKeyPath.
	PublicKey string
	// NoKey builds an initramfs without a plan key (PublicKey unused): the
	// Debian package's, which `pxeswarm serve` sends with its own key
	// appended (pxe.KeyArchive). Served any other way, its agent refuses
	// every plan.
	NoKey bool

	// Agent is the Go package built as /bin/uinit. Default: DefaultAgent.
	Agent string
	// Commands are u-root core command names (github.com/u-root/u-root/
	// cmds/core/<name>) or full package paths, built into one busybox in
	// /bbin. Default: DefaultCommands. "init" must be among them.
	Commands []string
	// Shell is the command /bin/sh and /bin/defaultsh point to (u-root's
	// init runs it after uinit exits). Default: DefaultShell.
	Shell string
	// SourceDir is a folder inside the Go module the agent and the u-root
	// commands are built from (its go.mod pins u-root). Default: the
	// working directory.
	SourceDir string

	// Compression is CompressAuto (default: xz when the kernel config
	// says CONFIG_RD_XZ=y, else gzip), CompressXZ or CompressGzip.
	Compression string

	// TempDir holds the build's scratch folder (removed afterwards).
	// Default: os.TempDir().
	TempDir string
}

// Result says what Build wrote.
type Result struct {
	Kernel        string // OutDir/vmlinuz
	Initramfs     string // OutDir/initramfs
	KernelSize    int64
	InitramfsSize int64 // compressed
	// Uncompressed is the size of the initramfs's cpio archive.
	Uncompressed int64
	Compression  string
	// KernelRelease is the kernel's version, e.g. "6.1.0-56-amd64".
	KernelRelease string
	// Modules are the carried modules (with dependencies); Builtin the
	// asked-for ones the kernel has built in.
	Modules, Builtin []string
	// ModulesSize is the carried modules' bytes, unpacked.
	ModulesSize int64
	// Firmware are the firmware files carried; MissingFirmware those the
	// modules name that FirmwareDir does not have.
	Firmware, MissingFirmware []string
	FirmwareSize              int64
	AgentSize                 int64 // uncompressed binary
	BusyboxSize               int64
	Took                      time.Duration
}

// Drivers says in one line what drivers and firmware the initramfs
// carries and which firmware files the drivers name but the build host
// lacks (by folder, e.g. "rtl_nic (50)"; files at the top as
// "/lib/firmware"), as the build prints it.
func (r Result) Drivers() string {
	s := fmt.Sprintf("modules: %d carried (%s unpacked), firmware: %d files (%s)", len(r.Modules), bytesize.Format(r.ModulesSize), len(r.Firmware), bytesize.Format(r.FirmwareSize))
	if len(r.MissingFirmware) == 0 {
		return s + ", missing: none"
	}
	count := map[string]int{}
	for _, m := range r.MissingFirmware {
		d := path.Dir(m)
		if d == "." {
			d = "/lib/firmware"
		}
		count[d]++
	}
	var dirs []string
	for d, n := range count {
		dirs = append(dirs, fmt.Sprintf("%s (%d)", d, n))
	}
	sort.Strings(dirs)
	return fmt.Sprintf("%s, missing: %d firmware files: %s", s, len(r.MissingFirmware), strings.Join(dirs, ", "))
}

// Total is the kernel plus the initramfs, the bytes a terminal downloads.
func (r Result) Total() int64 { return r.KernelSize + r.InitramfsSize }

// ErrConfig means the InitramfsConfig is incomplete or wrong.
var ErrConfig = errors.New("bad initramfs config")

// ErrKernelConfig means the kernel lacks something the agent needs.
var ErrKernelConfig = errors.New("kernel not suitable")

// withDefaults fills in defaults and checks the fields it can without
// touching the disk.
func (c InitramfsConfig) withDefaults() (InitramfsConfig, error) {
	if c.OutDir == "" {
		return c, fmt.Errorf("%w: no output folder: give one (--out /var/lib/pxeswarm/boot)", ErrConfig)
	}
	if c.PublicKey == "" && !c.NoKey {
		return c, fmt.Errorf("%w: no public plan key: give the server's plan-key.pub (--key %s)", ErrConfig, DefaultPublicKey)
	}
	if c.Modules == nil {
		c.Modules = DefaultModules
	}
	if c.Agent == "" {
		c.Agent = DefaultAgent
	}
	if c.Commands == nil {
		c.Commands = DefaultCommands
	}
	if c.Shell == "" {
		c.Shell = DefaultShell
	}
	if c.SourceDir == "" {
		c.SourceDir = "."
	}
	if c.Compression == "" {
		c.Compression = CompressAuto
	}
	if c.FirmwareDir == "" {
		c.FirmwareDir = "/lib/firmware"
	}
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	names := commandNames(c.commandPackages())
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			return c, fmt.Errorf("%w: command %s listed twice", ErrConfig, n)
		}
		seen[n] = true
	}
	if !seen["init"] {
		return c, fmt.Errorf("%w: the commands must include u-root's init", ErrConfig)
	}
	if !seen[c.Shell] {
		return c, fmt.Errorf("%w: shell %s is not among the commands", ErrConfig, c.Shell)
	}
	if seen[path.Base(c.Agent)] || path.Base(c.Agent) == "uinit" {
		return c, fmt.Errorf("%w: agent %s has the name of a busybox command", ErrConfig, c.Agent)
	}
	return c, nil
}

func (c InitramfsConfig) commandPackages() []string {
	pkgs := make([]string, len(c.Commands))
	for i, cmd := range c.Commands {
		if strings.Contains(cmd, "/") {
			pkgs[i] = cmd
		} else {
			pkgs[i] = uroot + cmd
		}
	}
	return pkgs
}

// Build compiles the agent and the u-root busybox, collects the kernel
// modules, and writes OutDir/vmlinuz and OutDir/initramfs (each replaced
// atomically, so a running server never serves half a file).
func (c InitramfsConfig) Build(ctx context.Context, log *slog.Logger) (Result, error) {
	start := time.Now()
	c, err := c.withDefaults()
	if err != nil {
		return Result{}, err
	}
	var res Result

	// The key first: it is the input most likely to be missing.
	var keyData []byte
	if !c.NoKey {
		if keyData, err = os.ReadFile(c.PublicKey); err != nil {
			return res, fmt.Errorf("%w: public plan key: %w (run `pxeswarm serve` once to make it, or give the server's plan-key.pub with --key)", ErrConfig, err)
		}
		if _, err := protocol.ParsePublicKey(keyData); err != nil {
			return res, fmt.Errorf("%w: %s: %w", ErrConfig, c.PublicKey, err)
		}
	}
	// Then the source to compile, before the slow steps: an installed
	// binary has none.
	if _, err := moduleDir(ctx, c.SourceDir); err != nil {
		return res, err
	}

	// Kernel, its release, config and modules.
	if c.Kernel == "" {
		if c.Kernel, err = NewestKernel(DefaultBoot); err != nil {
			return res, err
		}
	}
	if res.KernelRelease, err = kernelVersion(c.Kernel); err != nil {
		return res, err
	}
	kver := res.KernelRelease
	if c.ModulesDir == "" {
		c.ModulesDir = filepath.Join("/lib/modules", kver)
	}
	var kcfg map[string]string
	if c.KernelConfig == "" {
		if p := filepath.Join(DefaultBoot, "config-"+kver); fileExists(p) {
			c.KernelConfig = p
		}
	}
	if c.KernelConfig != "" {
		if kcfg, err = kernelConfig(c.KernelConfig); err != nil {
			return res, fmt.Errorf("kernel config: %w", err)
		}
		if err := checkKernelConfig(kcfg); err != nil {
			return res, fmt.Errorf("kernel %s (config %s): %w", c.Kernel, c.KernelConfig, err)
		}
	} else {
		log.Warn("build: kernel config not found; cannot check it, compressing with gzip", "kernel", c.Kernel, "release", kver)
	}
	if res.Compression, err = pickCompression(c.Compression, kcfg); err != nil {
		return res, err
	}
	tree, err := readModuleTree(c.ModulesDir)
	if err != nil {
		return res, err
	}
	if res.Modules, res.Builtin, err = tree.closure(c.Modules); err != nil {
		return res, err
	}
	modFiles, err := tree.moduleFiles(res.Modules)
	if err != nil {
		return res, err
	}
	for _, f := range modFiles {
		if strings.HasSuffix(f.name, ".ko") {
			res.ModulesSize += int64(len(f.data))
		}
	}
	log.Info("build: kernel", "kernel", c.Kernel, "release", kver, "modules", len(res.Modules), "builtin", strings.Join(res.Builtin, ","))
	fwFiles, err := c.firmware(log, modFiles, &res)
	if err != nil {
		return res, err
	}
	for _, f := range fwFiles {
		res.FirmwareSize += int64(len(f.data))
	}
	log.Info("build: " + res.Drivers())

	// Go programs.
	src, err := moduleDir(ctx, c.SourceDir)
	if err != nil {
		return res, err
	}
	tmp, err := os.MkdirTemp(c.TempDir, "pxeswarm-initramfs-")
	if err != nil {
		return res, fmt.Errorf("build: scratch folder: %w", err)
	}
	defer os.RemoveAll(tmp)
	agentBin := filepath.Join(tmp, "agent")
	bbBin := filepath.Join(tmp, "bbin-bb")
	t0 := time.Now()
	// The two compiles share the machine's cores; running them one after
	// the other is about as fast and keeps errors readable.
	if err := buildAgent(ctx, log, src, c.Agent, agentBin); err != nil {
		return res, err
	}
	log.Info("build: agent compiled", "package", c.Agent, "took", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	if err := buildBusybox(ctx, log, src, c.commandPackages(), tmp, bbBin); err != nil {
		return res, err
	}
	log.Info("build: u-root busybox compiled", "commands", len(c.Commands), "took", time.Since(t0).Round(time.Millisecond))

	// Assemble.
	a := newArchive()
	agent, err := os.ReadFile(agentBin)
	if err != nil {
		return res, err
	}
	bbData, err := os.ReadFile(bbBin)
	if err != nil {
		return res, err
	}
	res.AgentSize, res.BusyboxSize = int64(len(agent)), int64(len(bbData))
	if err := c.layout(a, agent, bbData, keyData, kver, modFiles, fwFiles); err != nil {
		return res, err
	}
	var raw bytes.Buffer
	if err := a.writeTo(&raw); err != nil {
		return res, err
	}
	res.Uncompressed = int64(raw.Len())

	if err := os.MkdirAll(c.OutDir, 0o755); err != nil {
		return res, fmt.Errorf("output folder: %w", err)
	}
	res.Initramfs = filepath.Join(c.OutDir, InitramfsFile)
	t0 = time.Now()
	if res.InitramfsSize, err = writeAtomic(res.Initramfs, func(w io.Writer) error {
		return compress(w, raw.Bytes(), res.Compression)
	}); err != nil {
		return res, fmt.Errorf("write initramfs: %w", err)
	}
	log.Info("build: initramfs compressed", "compression", res.Compression, "took", time.Since(t0).Round(time.Millisecond))
	res.Kernel = filepath.Join(c.OutDir, KernelFile)
	if res.KernelSize, err = writeAtomic(res.Kernel, func(w io.Writer) error {
		f, err := os.Open(c.Kernel)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	}); err != nil {
		return res, fmt.Errorf("write kernel: %w", err)
	}
	res.Took = time.Since(start)
	return res, nil
}

// layout puts everything in its place. u-root's init makes /proc, /sys,
// /tmp and the rest at boot; the archive needs /dev/console (the kernel
// opens it for init's stdio before any devtmpfs exists), the busybox with
// a link per command, /init, /bin/uinit, the shell links, the key and the
// modules.
func (c InitramfsConfig) layout(a *archive, agent, bbData, key []byte, kver string, mods, firmware []moduleFile) error {
	steps := []func() error{
		func() error { return a.dir("dev", 0o755) },
		func() error { return a.charDev("dev/console", 0o600, 5, 1) },
		func() error { return a.charDev("dev/null", 0o666, 1, 3) },
		func() error { return a.charDev("dev/tty", 0o666, 5, 0) },
		func() error { return a.dir("proc", 0o555) },
		func() error { return a.dir("sys", 0o555) },
		func() error { return a.dir("tmp", 0o1777) },
		func() error { return a.dir("etc", 0o755) },
		func() error { return a.file("bbin/bb", 0o755, bbData) },
		func() error { return a.symlink("init", "bbin/init") },
		func() error { return a.file("bin/"+path.Base(c.Agent), 0o755, agent) },
		func() error { return a.symlink("bin/uinit", path.Base(c.Agent)) },
		func() error { return a.symlink("bin/sh", "../bbin/"+c.Shell) },
		func() error { return a.symlink("bin/defaultsh", "../bbin/"+c.Shell) },
	}
	if key != nil {
		steps = append(steps, func() error { return a.file(strings.TrimPrefix(PublicKeyPath, "/"), 0o644, key) })
	}
	for _, name := range commandNames(c.commandPackages()) {
		steps = append(steps, func() error { return a.symlink("bbin/"+name, "bb") })
	}
	modDir := path.Join(strings.TrimPrefix(ModulesRoot, "/"), kver)
	for _, m := range mods {
		steps = append(steps, func() error { return a.file(path.Join(modDir, m.name), 0o644, m.data) })
	}
	for _, f := range firmware {
		steps = append(steps, func() error { return a.file(path.Join("lib/firmware", f.name), 0o644, f.data) })
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// firmware collects the firmware files the carried modules name.
func (c InitramfsConfig) firmware(log *slog.Logger, mods []moduleFile, res *Result) ([]moduleFile, error) {
	if c.FirmwareDir == "none" {
		return nil, nil
	}
	if !fileExists(c.FirmwareDir) {
		log.Warn("build: no firmware folder; carrying no firmware", "dir", c.FirmwareDir)
		return nil, nil
	}
	var names []string
	for _, m := range mods {
		if !strings.HasSuffix(m.name, ".ko") {
			continue
		}
		n, err := firmwareNames(m.data)
		if err != nil {
			return nil, fmt.Errorf("kernel module %s: read its firmware list: %w", m.name, err)
		}
		names = append(names, n...)
	}
	files, missing, err := firmwareFiles(c.FirmwareDir, names)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		res.Firmware = append(res.Firmware, f.name)
	}
	res.MissingFirmware = missing
	if len(missing) > 0 {
		dirs := map[string]bool{}
		for _, m := range missing {
			dirs[path.Dir(m)] = true
		}
		var list []string
		for d := range dirs {
			list = append(list, d)
		}
		sort.Strings(list)
		log.Warn("build: firmware the drivers may ask for is not installed; NICs that need it (some Realtek and Broadcom chips) may not come up (install Debian's firmware-realtek, firmware-bnx2, firmware-bnx2x, firmware-misc-nonfree from the non-free-firmware component and firmware-linux-free, or in a pxeswarm checkout run scripts/firmware.sh DIR and pass --firmware-dir DIR, then rebuild)",
			"missing", len(missing), "folders", strings.Join(list, ","), "carried", len(files))
	}
	return files, nil
}

// checkKernelConfig checks what the agent needs built in: initramfs
// support, devtmpfs (u-root's init mounts it), the MBR and GPT partition
// parsers (Linux builds them into the block layer; they cannot be modules)
// and AF_PACKET for the DHCP client.
func checkKernelConfig(cfg map[string]string) error {
	var missing []string
	for _, opt := range []string{"CONFIG_BLK_DEV_INITRD", "CONFIG_DEVTMPFS", "CONFIG_MSDOS_PARTITION", "CONFIG_EFI_PARTITION", "CONFIG_PACKET"} {
		if cfg[opt] != "y" {
			missing = append(missing, opt+"=y")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: it needs %s: use Debian's linux-image-amd64 or build the kernel with them", ErrKernelConfig, strings.Join(missing, ", "))
	}
	return nil
}

// writeAtomic writes file through a temporary file in the same folder and
// renames it into place. It returns the size written.
func writeAtomic(file string, write func(io.Writer) error) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return 0, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return 0, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return 0, err
	}
	st, err := tmp.Stat()
	if err != nil {
		tmp.Close()
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	return st.Size(), os.Rename(tmp.Name(), file)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
