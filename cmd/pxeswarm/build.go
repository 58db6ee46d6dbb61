package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/build"
	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
)

// buildTargets are what `pxeswarm build` makes.
var buildTargets = []struct{ name, summary string }{
	{"initramfs", "the terminals' kernel and u-root initramfs (agent, drivers, plan key)"},
	{"usb", "a rescue stick image for dd: the same agent from USB, with network or on-stick images"},
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
	case "usb":
		return runBuildUSB(ctx, args[1:])
	}
	fmt.Fprintf(os.Stderr, "pxeswarm build: unknown target %q (targets: initramfs, usb)\n", args[0])
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
	out := fs.String("out", build.DefaultBootDir, "folder for vmlinuz and initramfs (serve's default is <state_dir>/boot)")
	key := fs.String("key", build.DefaultPublicKey, `the server's public plan key, <state_dir>/plan-key.pub; when it is missing there, a new key pair is made in that folder (as 'pxeswarm serve' would on first start); "none" for no key (the Debian package's boot files: serve appends its key to those)`)
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
	// Before anything is made (a key pair, below): the build needs the
	// source and Go, which an installed binary may lack.
	if err := build.CheckSource(ctx, *src); err != nil {
		return err
	}
	noKey := *key == "none"
	if _, err := os.Stat(*key); !noKey && errors.Is(err, os.ErrNotExist) && filepath.Base(*key) == "plan-key.pub" {
		// First build on a new image host: make the server's key pair now,
		// so the initramfs can be built before serve ever ran.
		if _, err := pxe.LoadOrCreateKey(filepath.Dir(*key)); err != nil {
			return fmt.Errorf("no %s, and making a key pair there failed: %w", *key, err)
		}
		fmt.Fprintf(os.Stderr, "pxeswarm build initramfs: made a new plan-signing key pair in %s (pxeswarm serve with --state-dir %s uses it)\n", filepath.Dir(*key), filepath.Dir(*key))
	}
	cfg := build.InitramfsConfig{
		OutDir: *out, PublicKey: *key, NoKey: noKey, Agent: *agent, SourceDir: *src,
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
		fmt.Fprintf(os.Stderr, "pxeswarm build initramfs: note: %d firmware files the drivers name are not in %s (some Realtek/Broadcom NICs need them: install firmware-realtek, firmware-bnx2, firmware-bnx2x, firmware-misc-nonfree (non-free-firmware) and firmware-linux-free, or run a pxeswarm checkout's scripts/firmware.sh DIR and pass --firmware-dir DIR; then rebuild)\n", len(res.MissingFirmware), *fwDir)
	}
	const goal = 40 << 20
	fmt.Printf("kernel     %s  %s (%s)\n", res.Kernel, bytesize.Format(res.KernelSize), res.KernelRelease)
	fmt.Printf("initramfs  %s  %s (%s; %s unpacked: agent %s, u-root %s, %d modules, %d firmware files)\n", res.Initramfs,
		bytesize.Format(res.InitramfsSize), res.Compression, bytesize.Format(res.Uncompressed),
		bytesize.Format(res.AgentSize), bytesize.Format(res.BusyboxSize), len(res.Modules), len(res.Firmware))
	fmt.Printf("drivers    %s\n", res.Drivers())
	fmt.Printf("total      %s (goal: at most %s); built in %v\n", bytesize.Format(res.Total()), bytesize.Format(goal), res.Took.Round(100_000_000))
	if res.Total() > goal {
		fmt.Fprintf(os.Stderr, "pxeswarm build initramfs: warning: kernel + initramfs is %s, over the %s goal: every terminal downloads it over HTTP\n",
			bytesize.Format(res.Total()), bytesize.Format(goal))
	}
	return nil
}

func runBuildUSB(ctx context.Context, args []string) error {
	fs := newFlagSet("build usb", "--out rescue.img [--image X.img ...] [--server URL] [flags]", `
Build a rescue stick image for machines that cannot PXE-boot (a broken NIC
ROM, a locked BIOS) or sites with no server. Write it to a stick with dd;
everything on the stick is replaced:

  sudo dd if=rescue.img of=/dev/sdX bs=4M conv=fsync status=progress

The stick is a GPT disk: an EFI system partition (FAT32, named PXESWARM)
with systemd-boot, the kernel and initramfs from 'pxeswarm build
initramfs', and, with --image, a data partition (PXESWARM-DATA) holding
the images. It boots under UEFI on x86-64 PCs (no legacy BIOS boot).

Two modes, chosen in the stick's boot menu (the default is the first):
  network  find the server by DHCP, or the --server baked in, and follow
           its plan, as after a PXE boot (the server needs a task for the
           machine, or --auto all)
  local    write an image from the stick to the machine's disk, check it,
           then seed it to the LAN where a tracker is known (--tracker, or
           the server DHCP names): the stick's machine becomes the room's
           first seeder. Then power off (--after).
A stick with images defaults to local; without, to network. The agent
never writes the stick it booted from: it finds it by the partition
systemd-boot was loaded from. With several images (and no --default) or
several disks that fit (and no --target), it asks at the console.

Examples:
  pxeswarm build usb --out rescue.img --server http://10.0.0.5:8080
  pxeswarm build usb --out lab-stick.img --image lab.img --target first
  pxeswarm build usb --out lab-stick.img --image lab.torrent --source esp.img,root.img --create-table`)
	fs.section("stick")
	out := fs.String("out", "", "the stick image to write (required)")
	bootDir := fs.String("boot-dir", build.DefaultBootDir, "where 'pxeswarm build initramfs' put vmlinuz and initramfs")
	kernel := fs.String("kernel", "", "kernel to boot (default <boot-dir>/vmlinuz)")
	initrd := fs.String("initramfs", "", "initramfs with the agent (default <boot-dir>/initramfs)")
	sdBoot := fs.String("systemd-boot", build.DefaultSystemdBoot, "the EFI boot manager (Debian's systemd-boot-efi)")
	mode := enumFlag{allowed: []string{"", initramfs.ModeNetwork, initramfs.ModeLocal}}
	fs.Var(&mode, "mode", "default boot entry: network or local (default: local with --image, else network)")
	server := fs.String("server", "", "bake in the server URL, for networks whose DHCP cannot carry the URL option")
	var consoles repeatFlag
	fs.Var(&consoles, "console", "kernel console, repeatable; the last one is where the menu reads (default ttyS0,115200 then tty0)")
	menu := fs.Int("menu-timeout", build.DefaultMenuTimeout, "seconds the boot menu waits when it has two entries; -1 boots the default at once")
	fs.section("images (local mode)")
	var images, sources, trackers listFlag
	fs.Var(&images, "image", "raw disk image to carry (repeat for more; hashed into a torrent here), or one image torrent with --source")
	fs.Var(&sources, "source", "with a torrent --image: its source file(s), one per part, in order")
	def := fs.String("default", "", "image to write when the stick has several (default: ask at the console)")
	target := fs.String("target", "", `disk to write: "first" (first fixed disk that is not the stick) or a name like sda (default: the one disk that fits, else ask)`)
	createTable := fs.Bool("create-table", true, "write the image's partition table first (off: the disk's table must already fit)")
	seedFor := fs.Duration("seed-for", initramfs.DefaultStickSeedFor, "how long to seed the written image when a tracker is known (0 never)")
	fs.note("seed-for")
	after := enumFlag{val: initramfs.DefaultStickAfter, allowed: []string{"poweroff", "reboot", "shell"}}
	fs.Var(&after, "after", "what the machine does when done (reboot boots the stick again if it is still in)")
	fs.Var(&trackers, "tracker", "announce URL to seed to, repeatable (default: the server's tracker if DHCP names one)")
	fs.logFlags()
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "pxeswarm build usb: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	if *out == "" {
		return fmt.Errorf("%w: need --out rescue.img", errUsage)
	}
	site := &pxe.Site{}
	if err := quickImages(site, images, sources); err != nil {
		return err
	}
	cfg := build.USBConfig{Out: *out, BootDir: *bootDir, Kernel: *kernel, Initramfs: *initrd, SystemdBoot: *sdBoot,
		Server: strings.TrimRight(*server, "/"), Mode: mode.val, Default: *def, CreateTable: *createTable,
		SeedFor: *seedFor, After: after.val, Trackers: trackers, Consoles: consoles, MenuTimeout: *menu}
	if *menu == 0 {
		cfg.MenuTimeout = -1
	}
	if *target != "" {
		cfg.Target = protocol.Target{Disk: strings.TrimPrefix(*target, "/dev/")}
	}
	for _, si := range site.Images {
		cfg.Images = append(cfg.Images, build.USBImage{Name: si.Name, Torrent: si.Torrent, Sources: si.Source})
	}
	log := fs.logger()
	last := time.Now()
	cfg.Progress = func(done, total int64) {
		if time.Since(last) >= *fs.progress || done == total {
			last = time.Now()
			log.Info("usb: copying images", "done", bytesize.Format(done), "total", bytesize.Format(total))
		}
	}
	res, err := cfg.Build(ctx, log)
	if err != nil {
		return err
	}
	fmt.Printf("stick      %s  %s (mode %s, ESP %s, data %s)\n", res.Path, bytesize.Format(res.Size), res.Config.Mode,
		bytesize.Format(res.ESPSize), bytesize.Format(res.DataSize))
	for _, im := range res.Config.Images {
		fmt.Printf("image      %s  %s (info-hash %s)\n", im.Name, bytesize.Format(im.Length), im.InfoHash)
	}
	fmt.Printf("boot       %s\n", res.Cmdline)
	fmt.Printf("\nWrite it to a stick (everything on /dev/sdX is replaced; check the name with lsblk):\n  sudo dd if=%s of=/dev/sdX bs=4M conv=fsync status=progress\n", res.Path)
	return nil
}
