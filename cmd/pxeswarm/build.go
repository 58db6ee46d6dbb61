package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// buildTargets are what `pxeswarm build` makes.
var buildTargets = []struct{ name, summary string }{
	{"initramfs", "the terminals' kernel and u-root initramfs (agent, drivers, plan key)"},
}

func runBuild(ctx context.Context, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(os.Stderr, "Usage: pxeswarm build <target> [flags]\n\nTargets:\n")
		for _, t := range buildTargets {
			fmt.Fprintf(os.Stderr, "  %-10s %s\n", t.name, t.summary)
		}
		fmt.Fprintf(os.Stderr, "\nRun 'pxeswarm build <target> -h' for its flags.\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return errHelp
		}
		return errUsage
	}
	switch args[0] {
	case "initramfs":
		return runBuildInitramfs(ctx, args[1:])
	}
	fmt.Fprintf(os.Stderr, "pxeswarm build: unknown target %q (targets: initramfs)\n", args[0])
	return errUsage
}

func runBuildInitramfs(ctx context.Context, args []string) error {
	fs := newFlagSet("build initramfs", "[--out DIR] [--key plan-key.pub] [flags]", `
Build what a terminal boots when it has a task: DIR/vmlinuz (the kernel,
Debian's by default) and DIR/initramfs (u-root's init and a few rescue
commands, the pxeswarm agent as uinit, the kernel's NIC and disk drivers,
and the server's public plan key, so that the agent obeys only plans this
server signed). A rebuild from the same inputs gives the same bytes.

Run it from a pxeswarm source checkout: it compiles the agent and u-root
with the Go tool chain. The default --out is where 'pxeswarm serve' looks.

Examples:
  pxeswarm build initramfs
  pxeswarm build initramfs --out /var/lib/pxeswarm/boot --key /var/lib/pxeswarm/plan-key.pub
  pxeswarm build initramfs --kernel ~/linux/arch/x86/boot/bzImage --modules-dir /lib/modules/6.12.0-test`)
	fs.section("initramfs")
	out := fs.String("out", "/var/lib/pxeswarm/boot", "folder for vmlinuz and initramfs (serve's default is <state_dir>/boot)")
	key := fs.String("key", build.DefaultPublicKey, "the server's public plan key, <state_dir>/plan-key.pub; when it is missing there, a new key pair is made in that folder (as 'pxeswarm serve' would on first start)")
	agent := fs.String("agent", build.DefaultAgent, "Go package run as u-root's uinit")
	src := fs.String("src", ".", "a folder inside the Go module to build from (its go.mod pins u-root)")
	compress := enumFlag{val: build.CompressAuto, allowed: []string{build.CompressAuto, build.CompressXZ, build.CompressGzip}}
	fs.Var(&compress, "compress", "initramfs compression: auto (xz if the kernel's config has CONFIG_RD_XZ, else gzip), xz or gzip")
	fs.section("kernel")
	kernel := fs.String("kernel", "", "x86 bzImage to ship (default: the newest /boot/vmlinuz-*)")
	modDir := fs.String("modules-dir", "", "the kernel's module tree (default: /lib/modules/<release read from the kernel>)")
	kconfig := fs.String("kernel-config", "", "the kernel's .config (default: /boot/config-<release> if present)")
	var modules, addModules listFlag
	fs.Var(&modules, "modules", "modules to carry, replacing the default list ("+strings.Join(build.DefaultModules, ",")+"); dependencies come along")
	fs.Var(&addModules, "add-module", "a module to carry besides the list; repeatable")
	fwDir := fs.String("firmware-dir", "/lib/firmware", `where the firmware the modules name is taken from; "none" carries none`)
	fs.logFlags()
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "pxeswarm build initramfs: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	if _, err := os.Stat(*key); errors.Is(err, os.ErrNotExist) && filepath.Base(*key) == "plan-key.pub" {
		// First build on a new image host: make the server's key pair now,
		// so the initramfs can be built before serve ever ran.
		if _, err := pxe.LoadOrCreateKey(filepath.Dir(*key)); err != nil {
			return fmt.Errorf("no %s, and making a key pair there failed: %w", *key, err)
		}
		fmt.Fprintf(os.Stderr, "pxeswarm build initramfs: made a new plan-signing key pair in %s (pxeswarm serve with --state-dir %s uses it)\n", filepath.Dir(*key), filepath.Dir(*key))
	}
	cfg := build.InitramfsConfig{
		OutDir: *out, PublicKey: *key, Agent: *agent, SourceDir: *src,
		Compression: compress.val,
		Kernel:      *kernel, ModulesDir: *modDir, KernelConfig: *kconfig, FirmwareDir: *fwDir,
	}
	if len(modules) > 0 {
		cfg.Modules = modules
	} else {
		cfg.Modules = build.DefaultModules
	}
	cfg.Modules = append(append([]string(nil), cfg.Modules...), addModules...)
	res, err := cfg.Build(ctx, fs.logger())
	if err != nil {
		return err
	}
	if len(res.MissingFirmware) > 0 {
		fmt.Fprintf(os.Stderr, "pxeswarm build initramfs: note: %d firmware files the drivers name are not in %s (some Realtek/Broadcom NICs need them: install firmware-realtek, firmware-bnx2, firmware-misc-nonfree and rebuild)\n", len(res.MissingFirmware), *fwDir)
	}
	const goal = 40 << 20
	fmt.Printf("kernel     %s  %s (%s)\n", res.Kernel, imager.FormatBytes(res.KernelSize), res.KernelRelease)
	fmt.Printf("initramfs  %s  %s (%s; %s unpacked: agent %s, u-root %s, %d modules, %d firmware files)\n", res.Initramfs,
		imager.FormatBytes(res.InitramfsSize), res.Compression, imager.FormatBytes(res.Uncompressed),
		imager.FormatBytes(res.AgentSize), imager.FormatBytes(res.BusyboxSize), len(res.Modules), len(res.Firmware))
	fmt.Printf("total      %s (goal: at most %s); built in %v\n", imager.FormatBytes(res.Total()), imager.FormatBytes(goal), res.Took.Round(100_000_000))
	if res.Total() > goal {
		fmt.Fprintf(os.Stderr, "pxeswarm build initramfs: warning: kernel + initramfs is %s, over the %s goal: every terminal downloads it over HTTP\n",
			imager.FormatBytes(res.Total()), imager.FormatBytes(goal))
	}
	return nil
}
