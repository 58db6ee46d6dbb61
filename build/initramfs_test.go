package build

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/needs"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// standin is the agent stand-in the smoke test boots: it loads modules
// with initramfs/coldplug and prints what it finds.
const standin = "github.com/pxeswarm/pxeswarm/build/testdata/standin"

// maxBoot is the goal for kernel plus initramfs, what every terminal
// downloads.
const maxBoot = 40 << 20

// testKey writes a fixed public plan key (the same bytes every run, so
// builds can be compared) and returns its path and content.
func testKey(t *testing.T) (string, string) {
	t.Helper()
	seed := sha256.Sum256([]byte("pxeswarm build test key"))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	text := base64.StdEncoding.EncodeToString(pub)
	p := filepath.Join(t.TempDir(), "plan-key.pub")
	if err := os.WriteFile(p, []byte(text+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, text
}

func needBuildTools(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go tool is not on PATH; the builder compiles the agent and u-root with it: %v", err)
	}
	needs.Tool(t, "/boot/vmlinuz-*")
}

// testBuild builds with agent into a fresh folder.
func testBuild(t *testing.T, key, agent string) (Result, time.Duration) {
	t.Helper()
	start := time.Now()
	res, err := InitramfsConfig{OutDir: t.TempDir(), PublicKey: key, Agent: agent, TempDir: t.TempDir()}.Build(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	return res, time.Since(start)
}

// realAgent is DefaultAgent when it compiles, else the stand-in (the
// agent is being written alongside this package).
func realAgent(t *testing.T) string {
	cmd := exec.Command("go", "build", "-o", os.DevNull, DefaultAgent)
	cmd.Env = goEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("%s does not build (%v: %s); using the stand-in", DefaultAgent, err, out)
		return standin
	}
	return DefaultAgent
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

// TestBuildReproducible builds twice from the same inputs and wants the
// same bytes; it also checks what went into the archive.
func TestBuildReproducible(t *testing.T) {
	needBuildTools(t)
	key, keyText := testKey(t)
	agent := realAgent(t)
	first, took1 := testBuild(t, key, agent)
	second, took2 := testBuild(t, key, agent)
	t.Logf("agent %s", agent)
	t.Logf("build 1 (first in this run, cold if the Go cache was): %v; build 2 (warm): %v", took1.Round(time.Millisecond), took2.Round(time.Millisecond))
	t.Logf("firmware: %d carried, %d named by the modules but not installed", len(first.Firmware), len(first.MissingFirmware))
	t.Log(first.Drivers())
	t.Logf("kernel %s %s; initramfs %s %s (%s uncompressed; agent %s, busybox %s); total %s",
		first.KernelRelease, bytesize.Format(first.KernelSize), first.Compression, bytesize.Format(first.InitramfsSize),
		bytesize.Format(first.Uncompressed), bytesize.Format(first.AgentSize), bytesize.Format(first.BusyboxSize), bytesize.Format(first.Total()))
	for _, f := range []struct{ a, b string }{{first.Kernel, second.Kernel}, {first.Initramfs, second.Initramfs}} {
		if sa, sb := fileSHA(t, f.a), fileSHA(t, f.b); sa != sb {
			t.Errorf("sha256(%s) = %s, rebuild %s = %s: not reproducible", f.a, sa, f.b, sb)
		}
	}
	if filepath.Base(first.Kernel) != "vmlinuz" || filepath.Base(first.Initramfs) != "initramfs" {
		t.Errorf("Build() wrote %s and %s, want vmlinuz and initramfs (pxeswarm serve's defaults)", first.Kernel, first.Initramfs)
	}
	if first.Total() > maxBoot {
		t.Errorf("kernel + initramfs = %s, want at most %s", bytesize.Format(first.Total()), bytesize.Format(maxBoot))
	}

	// What is inside.
	compressed, err := os.ReadFile(first.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := decompress(compressed)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]cpio.Record{}
	for _, r := range readArchive(t, raw) {
		byName[r.Name] = r
	}
	content := func(name string) string {
		r, ok := byName[name]
		if !ok {
			t.Errorf("initramfs has no %s", name)
			return ""
		}
		b, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		return string(b)
	}
	for name, want := range map[string]string{
		"init":                      "bbin/init",
		"bin/uinit":                 path.Base(agent),
		"bin/sh":                    "../bbin/gosh",
		"bin/defaultsh":             "../bbin/gosh",
		"bbin/ls":                   "bb",
		"etc/pxeswarm/plan-key.pub": keyText + "\n",
	} {
		if got := content(name); got != want {
			t.Errorf("initramfs %s = %q, want %q", name, got, want)
		}
	}
	if r := byName["dev/console"]; r.Mode&cpio.S_IFMT != cpio.S_IFCHR || r.Rmajor != 5 || r.Rminor != 1 {
		t.Errorf("initramfs dev/console = %v, want character device 5,1", r.Info)
	}
	if got := content("bin/" + path.Base(agent)); !strings.HasPrefix(got, "\x7fELF") {
		t.Errorf("initramfs bin/%s is not an ELF binary", path.Base(agent))
	}
	modDir := "lib/modules/" + first.KernelRelease
	dep := content(modDir + "/modules.dep")
	alias := content(modDir + "/modules.alias")
	var kos int
	for name := range byName {
		if strings.HasSuffix(name, ".ko") {
			kos++
			if !strings.HasPrefix(name, modDir+"/kernel/") {
				t.Errorf("initramfs module %s is outside %s/kernel (u-root's init would load loose ones in no order)", name, modDir)
			}
			if !strings.Contains(dep, strings.TrimPrefix(name, modDir+"/")+":") {
				t.Errorf("initramfs module %s has no modules.dep line", name)
			}
		}
	}
	if kos != len(first.Modules) {
		t.Errorf("initramfs holds %d .ko files, Result.Modules lists %d", kos, len(first.Modules))
	}
	for _, m := range []string{"virtio_net", "virtio_blk", "e1000e", "ahci", "nvme", "usb_storage"} {
		if !strings.Contains(alias, " "+m+"\n") {
			t.Errorf("initramfs modules.alias has no alias for %s", m)
		}
	}
	if strings.Contains(alias, " snd_hda_intel\n") {
		t.Error("initramfs modules.alias lists snd_hda_intel, a module it does not carry")
	}
}

// TestBuildQEMU boots the built kernel and initramfs with a virtio NIC and
// a virtio disk and a USB stick; the stand-in agent, run as u-root's uinit, loads their
// drivers (initramfs/coldplug) and shows eth0, vda and sda.
func TestBuildQEMU(t *testing.T) {
	needBuildTools(t)
	needs.Tool(t, "qemu-system-x86_64")
	key, keyText := testKey(t)
	res, took := testBuild(t, key, standin)
	t.Logf("built with the stand-in agent in %v", took.Round(time.Millisecond))
	var disks []qemu.Disk
	for _, usb := range []bool{false, true} {
		disk := filepath.Join(t.TempDir(), "disk.raw")
		f, err := createDisk(disk, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		disks = append(disks, qemu.Disk{Path: disk, USB: usb})
	}
	var console bytes.Buffer
	start := time.Now()
	vm, err := qemu.Config{
		Name: "build-smoke", Kernel: res.Kernel, Initramfs: res.Initramfs,
		Append:  "console=ttyS0 panic=-1 loglevel=4 standin.wait=eth0,vda,sda",
		Disks:   disks, // a virtio disk and a USB stick (xHCI)
		Timeout: 2 * time.Minute,
		Console: &console,
		// User networking with restrict=on: the guest gets a NIC and
		// nothing it sends leaves QEMU.
		Extra: []string{"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"},
	}.Boot(context.Background(), testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	expect := func(marker string, d time.Duration) string {
		t.Helper()
		line, err := vm.Expect(marker, d)
		if err != nil {
			t.Fatalf("%v\ncommand: %s\nconsole:\n%s", err, vm.CommandLine(), vm.Console())
		}
		return strings.TrimSpace(line[strings.Index(line, marker)+len(marker):])
	}
	expect("pxeswarm-standin: running", 90*time.Second)
	booted := time.Since(start)
	loaded := strings.Fields(expect("pxeswarm-standin: loaded", 30*time.Second))
	// The USB stick takes three rounds of coldplug: xhci_pci brings the
	// USB device, usb_storage the SCSI device, sd_mod the disk.
	for _, m := range []string{"virtio_pci", "virtio_net", "virtio_blk", "xhci_pci", "usb_storage", "sd_mod"} {
		if !slices.Contains(loaded, m) {
			t.Errorf("stand-in loaded %q, want %s among them", loaded, m)
		}
	}
	if nets := strings.Fields(expect("pxeswarm-standin: net", 15*time.Second)); !slices.Contains(nets, "eth0") {
		t.Errorf("/sys/class/net = %q, want eth0 (virtio_net loaded)\nconsole:\n%s", nets, vm.Console())
	}
	blocks := strings.Fields(expect("pxeswarm-standin: block", 5*time.Second))
	if !slices.Contains(blocks, "vda") || !slices.Contains(blocks, "sda") {
		t.Errorf("/sys/block = %q, want vda (virtio_blk loaded) and sda (usb_storage, sd_mod)", blocks)
	}
	if got := expect("pxeswarm-standin: key", 5*time.Second); got != keyText {
		t.Errorf("key in the initramfs = %q, want %q", got, keyText)
	}
	if got := expect("pxeswarm-standin: uname", 5*time.Second); got != res.KernelRelease {
		t.Errorf("/bbin/uname -r = %q, want %q", got, res.KernelRelease)
	}
	if got := expect("pxeswarm-standin: shell", 10*time.Second); got != "shell-ok 42" {
		t.Errorf("/bin/sh -c 'echo shell-ok $((6*7))' = %q, want %q", got, "shell-ok 42")
	}
	expect("pxeswarm-standin: power off", 5*time.Second)
	if err := vm.Wait(); err != nil {
		t.Errorf("Wait() = %v, want a clean power-off", err)
	}
	t.Logf("booted to the agent in %v, powered off after %v", booted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if testing.Verbose() || strings.Contains(console.String(), "load errors") {
		t.Logf("console:\n%s", console.String())
	}
}

func TestBuildConfigErrors(t *testing.T) {
	key, _ := testKey(t)
	bad := filepath.Join(t.TempDir(), "bad.pub")
	os.WriteFile(bad, []byte("not a key\n"), 0o644)
	out := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  InitramfsConfig
		err  error
	}{
		{"no out", InitramfsConfig{PublicKey: key}, ErrConfig},
		{"no key", InitramfsConfig{OutDir: out}, ErrConfig},
		{"missing key", InitramfsConfig{OutDir: out, PublicKey: filepath.Join(out, "nope.pub")}, ErrConfig},
		{"bad key", InitramfsConfig{OutDir: out, PublicKey: bad}, ErrConfig},
		{"no init", InitramfsConfig{OutDir: out, PublicKey: key, Commands: []string{"gosh", "ls"}}, ErrConfig},
		{"no shell", InitramfsConfig{OutDir: out, PublicKey: key, Commands: []string{"init", "ls"}}, ErrConfig},
		{"twice", InitramfsConfig{OutDir: out, PublicKey: key, Commands: []string{"init", "gosh", "ls", "github.com/x/ls"}}, ErrConfig},
		{"agent clash", InitramfsConfig{OutDir: out, PublicKey: key, Agent: "example.com/ls"}, ErrConfig},
		{"not a kernel", InitramfsConfig{OutDir: out, PublicKey: key, Kernel: key}, ErrNotBzImage},
		// NoKey (the Debian package's build) gets past the key to the kernel.
		{"no key wanted", InitramfsConfig{OutDir: out, NoKey: true, Kernel: key}, ErrNotBzImage},
		{"no source", InitramfsConfig{OutDir: out, PublicKey: key, SourceDir: t.TempDir()}, ErrNoSource},
		{"bad compression", InitramfsConfig{OutDir: out, PublicKey: key, Compression: "lz4"}, nil},
	} {
		_, err := tc.cfg.Build(context.Background(), testlog.New(t))
		if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) {
			t.Errorf("%s: Build() error = %v, want %v", tc.name, err, tc.err)
		}
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("failed builds left %d files in the output folder", len(ents))
	}
}

// TestKeyPathMatchesAgent: the builder puts the key where the agent reads
// it; only the slow QEMU tests would notice otherwise.
func TestKeyPathMatchesAgent(t *testing.T) {
	if PublicKeyPath != initramfs.DefaultKeyPath {
		t.Errorf("build puts the key at %s, the agent reads %s", PublicKeyPath, initramfs.DefaultKeyPath)
	}
}
