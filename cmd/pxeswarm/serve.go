package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/pxeswarm/pxeswarm/pxe"
)

func runServe(ctx context.Context, args []string) error {
	fs := newFlagSet("serve", "--config site.toml | --image disk.img --interface IF --dhcp full|proxy [flags]", `
Run the boot server for a room of terminals: DHCP (full or proxy), TFTP for
the loaders (iPXE, or for UEFI Debian's signed shim and GRUB), HTTP for iPXE
scripts and GRUB configs, kernel, initramfs, torrents,
signed plans and the status/admin API, the tracker (on the HTTP port) and a
seeder for every image.

Only a terminal with an active task gets a boot file from DHCP, and then
our kernel; the others boot their local disk straight from the firmware. Tasks come from the admin API
(POST /api/tasks with the token in <state-dir>/admin-token) or from --auto.
Images can be added and removed while serving (POST /api/images from the
folders given with --image-dir, DELETE /api/images/NAME), and captured from
a golden disk (pxeswarm capture; kept in --capture-dir).

With --config, everything comes from the site file (every key is documented
in docs/site.example.toml) and the flags below only override logging.
Without it, quick mode builds a site from the flags:

Examples:
  pxeswarm serve --config /etc/pxeswarm/site.toml
  pxeswarm serve --image lab.img --interface br0 --dhcp full --auto all
  pxeswarm serve --image lab.img --interface eth0 --dhcp proxy   # beside the school's DHCP`)
	fs.section("site")
	config := fs.String("config", "", "site config file (TOML); the other [site] flags are then not allowed")
	stateDir := fs.String("state-dir", "/var/lib/pxeswarm", "keys, task store, leases and made torrents")
	var images listFlag
	fs.Var(&images, "image", "raw disk/partition image or image torrent to serve (repeat for more); a raw image is hashed into a torrent once and cached")
	var sources listFlag
	fs.Var(&sources, "source", "with a torrent --image: its source file(s), one per part, in order")
	var imageDirs listFlag
	fs.Var(&imageDirs, "image-dir", "folder the admin API may publish more images from while serving (POST /api/images; repeat for more); default none")
	openRoom := fs.Bool("console-open-room", false, "the web console's room page (read-only, no buttons) needs no login: for a screen in the staff room; everything else still does")
	captureDir := fs.String("capture-dir", "", `where captured images are received and kept (pxeswarm capture); default <state-dir>/captures, "off" for no captures`)
	auto := enumFlag{val: "none", allowed: []string{"none", "all"}}
	fs.Var(&auto, "auto", "start tasks by themselves: none (admin API only) or all (every terminal our DHCP sees PXE-boot gets the image once; needs --dhcp full or proxy)")
	check := enumFlag{val: "verify", allowed: []string{"fresh", "verify"}}
	fs.Var(&check, "check", "plan check mode: fresh (blank targets) or verify (fetch only what differs)")
	disk := fs.String("disk", "first", `target disk in plans: "first" (first fixed disk that is not the boot medium) or a name like sda`)
	createTable := fs.Bool("create-table", false, "plans write the image's partition table first")
	discard := fs.Bool("discard", false, "plans have terminals discard the free space of used-block images after writing, where the disk can (TRIM)")
	after := enumFlag{val: "reboot", allowed: []string{"reboot", "poweroff", "shell"}}
	fs.Var(&after, "after", "what a terminal does when finished")
	seedFor := fs.String("seed-for", "10m", "how long a finished terminal keeps seeding")
	onError := enumFlag{val: "halt", allowed: []string{"halt", "retry", "shell"}}
	fs.Var(&onError, "on-error", "what a terminal does after an error: halt (show it and wait, no shell), retry (start over after a back-off) or shell (root shell on the console, for debugging)")
	fs.section("dhcp")
	iface := fs.String("interface", "", "interface facing the terminals (required unless --dhcp off)")
	dhcpMode := enumFlag{val: "proxy", allowed: []string{"full", "proxy", "off"}}
	fs.Var(&dhcpMode, "dhcp", "full: we hand out addresses; proxy: beside an existing DHCP server; off")
	address := fs.String("address", "", "our IPv4 address on --interface (default: its first)")
	pool := fs.String("pool", "", "full mode: address pool FIRST-LAST (default: .100-.199 of the interface's /24)")
	option := fs.Int("option", 224, "DHCP option code that carries the server URL (224-254)")
	uefiLoader := enumFlag{val: pxe.LoaderShim, allowed: []string{pxe.LoaderShim, pxe.LoaderIPXE}}
	fs.Var(&uefiLoader, "uefi-loader", "what x86-64 UEFI machines boot: shim (Debian's signed shim, GRUB and kernel; works with Secure Boot on) or ipxe (unsigned; Secure Boot off)")
	fs.section("http")
	httpListen := fs.String("http-listen", ":8080", "HTTP address (scripts, plans, APIs, tracker)")
	httpsListen := fs.String("https-listen", "", `also serve HTTPS here (e.g. ":8443"), with a self-signed certificate made on first start (its fingerprint is logged); the admin API then answers only over HTTPS`)
	publicURL := fs.String("public-url", "", "how terminals reach us (default http://<address>:<port>)")
	kernel := fs.String("kernel", "", "kernel for terminals with a task (default <state-dir>/boot/vmlinuz)")
	initramfs := fs.String("initramfs", "", "initramfs with the pxeswarm agent (default <state-dir>/boot/initramfs)")
	cmdline := fs.String("cmdline", "", `extra kernel arguments (default "console=tty0 console=ttyS0,115200")`)
	fs.section("tftp")
	tftpListen := fs.String("tftp-listen", ":69", `TFTP address, or "off"`)
	tftpRoot := fs.String("tftp-root", pxe.DefaultTFTPRoot, "folder with undionly.kpxe and ipxe.efi")
	fs.section("seed")
	seedPort := fs.Int("seed-port", 6881, "first peer port (image k uses port+k)")
	var uploadLimit bytesFlag
	fs.Var(&uploadLimit, "upload-limit", "cap the server's upload per image, bytes per second (e.g. 50MiB); default none")
	fs.logFlags()
	if err := fs.parse(args); err != nil {
		return err
	}
	log := fs.logger()
	var site *pxe.Site
	if *config != "" {
		set := fs.setFlags()
		for _, f := range set {
			if f != "config" && !isLogFlag(f) {
				return fmt.Errorf("%w: --%s cannot be combined with --config: put it in the site file", errUsage, f)
			}
		}
		var err error
		if site, err = pxe.LoadSite(*config); err != nil {
			return err
		}
	} else {
		if len(images) == 0 && len(imageDirs) == 0 && *captureDir == "off" {
			fs.Usage()
			return fmt.Errorf("%w: need --config, or --image (or --image-dir, or captures on to capture a first image) for quick mode", errUsage)
		}
		site = &pxe.Site{StateDir: *stateDir, Interface: *iface, PublicURL: *publicURL}
		if *address != "" {
			a, err := netip.ParseAddr(*address)
			if err != nil {
				return fmt.Errorf("%w: --address %q: %v", errUsage, *address, err)
			}
			site.Address = a
		}
		site.HTTP = pxe.SiteHTTP{Listen: *httpListen, HTTPSListen: *httpsListen, Kernel: *kernel, Initramfs: *initramfs, Cmdline: *cmdline}
		site.HTTP.CaptureDir = *captureDir
		site.HTTP.ConsoleOpenRoom = *openRoom
		if *captureDir != "" && *captureDir != "off" {
			abs, err := filepath.Abs(*captureDir)
			if err != nil {
				return fmt.Errorf("%w: --capture-dir %q: %v", errUsage, *captureDir, err)
			}
			site.HTTP.CaptureDir = abs
		}
		for _, dir := range imageDirs {
			abs, err := filepath.Abs(dir)
			if err != nil {
				return fmt.Errorf("%w: --image-dir %q: %v", errUsage, dir, err)
			}
			site.HTTP.ImageDirs = append(site.HTTP.ImageDirs, abs)
		}
		site.DHCP = pxe.SiteDHCP{Mode: dhcpMode.val, Option: *option, UEFILoader: uefiLoader.val}
		site.TFTP = pxe.SiteTFTP{Listen: *tftpListen, Root: *tftpRoot}
		site.Seed = pxe.SiteSeed{Port: *seedPort, UploadLimit: pxe.ByteSize(uploadLimit)}
		site.Plan = pxe.SitePlan{Disk: *disk, CreateTable: *createTable, Discard: *discard, Check: check.val, After: after.val, OnError: onError.val, Auto: auto.val}
		if err := site.Plan.SeedFor.UnmarshalText([]byte(*seedFor)); err != nil {
			return fmt.Errorf("%w: --seed-for: %v", errUsage, err)
		}
		if err := quickImages(site, images, sources); err != nil {
			return err
		}
		if dhcpMode.val == "full" {
			if err := quickPool(site, *pool); err != nil {
				return err
			}
		}
		site.ApplyDefaults()
		if err := site.Check(); err != nil {
			return err
		}
	}
	return site.Start(ctx, log)
}

// quickImages maps --image (and --source) to [[image]] entries.
func quickImages(site *pxe.Site, images, sources listFlag) error {
	for _, im := range images {
		if strings.HasSuffix(im, ".torrent") {
			if len(images) != 1 || len(sources) == 0 {
				return fmt.Errorf("%w: a torrent --image needs its --source file(s) (and comes alone)", errUsage)
			}
			site.Images = append(site.Images, pxe.SiteImage{Torrent: im, Source: sources})
			continue
		}
		site.Images = append(site.Images, pxe.SiteImage{Source: []string{im}})
	}
	if len(sources) > 0 && !strings.HasSuffix(images[0], ".torrent") {
		return fmt.Errorf("%w: --source goes with a torrent --image only", errUsage)
	}
	return nil
}

// quickPool sets the full-mode pool from --pool or from the interface's
// subnet (.100–.199 of a /24).
func quickPool(site *pxe.Site, pool string) error {
	if pool != "" {
		first, last, ok := strings.Cut(pool, "-")
		a, err1 := netip.ParseAddr(strings.TrimSpace(first))
		b, err2 := netip.ParseAddr(strings.TrimSpace(last))
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("%w: --pool %q: write it as FIRST-LAST, e.g. 198.18.0.100-198.18.0.199", errUsage, pool)
		}
		site.DHCP.PoolStart, site.DHCP.PoolEnd = a, b
		return nil
	}
	ifi, err := net.InterfaceByName(site.Interface)
	if err != nil {
		return fmt.Errorf("%w: --interface %q: %v", errUsage, site.Interface, err)
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || !p.Addr().Is4() {
			continue
		}
		if p.Bits() != 24 {
			return fmt.Errorf("%w: %s is a /%d: give the pool with --pool FIRST-LAST", errUsage, p, p.Bits())
		}
		base := p.Masked().Addr().As4()
		base[3] = 100
		site.DHCP.PoolStart = netip.AddrFrom4(base)
		base[3] = 199
		site.DHCP.PoolEnd = netip.AddrFrom4(base)
		if !site.Address.IsValid() {
			site.Address = p.Addr()
		}
		if a := site.Address.As4(); a[3] >= 100 && a[3] <= 199 {
			return fmt.Errorf("%w: our address %v is inside the default pool: give one with --pool", errUsage, site.Address)
		}
		return nil
	}
	return fmt.Errorf("%w: interface %s has no IPv4 address: add one (ip addr add) or give --address and --pool", errUsage, site.Interface)
}
