package build

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// Defaults of USBConfig.
const (
	// DefaultBootDir is where `pxeswarm build initramfs` writes vmlinuz
	// and initramfs by default.
	DefaultBootDir = "/var/lib/pxeswarm/boot"
	// DefaultSystemdBoot is Debian's systemd-boot-efi boot manager.
	DefaultSystemdBoot = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
	// DefaultMenuTimeout is how long systemd-boot shows its menu when the
	// stick has two entries (local and network).
	DefaultMenuTimeout = 3
)

// DefaultConsoles: the screen and the first serial port. The last one is
// /dev/console, where the agent's menu reads its answers.
var DefaultConsoles = []string{"ttyS0,115200", "tty0"}

// USBConfig describes a rescue stick image for `dd`: a GPT disk made with
// go-diskfs, an EFI system partition (FAT32) with systemd-boot, the
// terminals' kernel and initramfs and the stick's config
// (initramfs.StickFile), and, when images are given, a data partition
// holding their bytes. It boots under UEFI on x86-64. (No BIOS boot: that
// needs a BIOS boot loader on the stick, and Debian's are not in the
// dependency list; see the README.)
type USBConfig struct {
	// Out is the disk image to write; it is replaced.
	Out string
	// Kernel and Initramfs are what the stick boots. Default: vmlinuz and
	// initramfs in BootDir (DefaultBootDir), as `pxeswarm build
	// initramfs` makes them (with the server's public plan key).
	BootDir           string
	Kernel, Initramfs string
	// SystemdBoot is the EFI boot manager; default DefaultSystemdBoot.
	SystemdBoot string
	// Server is baked in as pxeswarm.server= and in the stick's config:
	// for networks whose DHCP cannot carry the URL option.
	Server string
	// Mode is the default boot entry: initramfs.ModeLocal when Images
	// are given, else initramfs.ModeNetwork. A stick with images has a
	// second entry for the other mode.
	Mode string
	// Images go on the data partition.
	Images []USBImage
	// Default names the image local mode writes when there are several;
	// empty: the person at the console chooses.
	Default string
	// Target, CreateTable, SeedFor, After and Trackers are the local-mode
	// settings of every image (see initramfs.StickImage). A zero Target
	// means: the one disk that can take the image, else ask.
	Target      protocol.Target
	CreateTable bool
	SeedFor     time.Duration
	After       string
	Trackers    []string
	// Consoles for the kernel command line; default DefaultConsoles.
	Consoles []string
	// MenuTimeout in seconds for systemd-boot's menu; default
	// DefaultMenuTimeout. 0 after defaults never happens; use -1 for
	// none (boot the default entry at once).
	MenuTimeout int
	// Progress, if set, is told about copying image bytes.
	Progress func(done, total int64)
}

// USBImage is one image to carry: a torrent with its source files, or a
// single raw disk image (hashed into a torrent here).
type USBImage struct {
	Name        string   // default: from the torrent, or the raw file's name
	Torrent     string   // made with `pxeswarm mktorrent`; empty for a raw image
	Sources     []string // one per image part, in order
	PieceLength int64    // for a raw image; default imager.PieceLengthFor its size
}

// USB is a built stick.
type USB struct {
	Path     string
	Size     int64
	ESPUUID  string // the ESP's PARTUUID, lower case
	Config   initramfs.StickConfig
	Cmdline  string // of the default entry
	ESPSize  int64
	DataSize int64
}

// ErrUSB wraps configuration errors of the stick builder.
var ErrUSB = errors.New("cannot build the rescue stick")

const mib = 1 << 20

// Build writes the stick image.
func (c USBConfig) Build(ctx context.Context, log *slog.Logger) (*USB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrUSB, fmt.Sprintf(format, args...))
	}
	if c.Out == "" {
		return nil, bad("no output file: give --out rescue.img")
	}
	c.BootDir = cmp.Or(c.BootDir, DefaultBootDir)
	c.Kernel = cmp.Or(c.Kernel, filepath.Join(c.BootDir, KernelFile))
	c.Initramfs = cmp.Or(c.Initramfs, filepath.Join(c.BootDir, InitramfsFile))
	c.SystemdBoot = cmp.Or(c.SystemdBoot, DefaultSystemdBoot)
	for _, f := range []struct{ path, what string }{
		{c.Kernel, "kernel (run `pxeswarm build initramfs` first, or give --kernel)"},
		{c.Initramfs, "initramfs (run `pxeswarm build initramfs` first, or give --initramfs)"},
		{c.SystemdBoot, "systemd-boot (install Debian's systemd-boot-efi package)"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			return nil, bad("no %s: %v", f.what, err)
		}
	}
	if c.Mode == "" {
		c.Mode = initramfs.ModeNetwork
		if len(c.Images) > 0 {
			c.Mode = initramfs.ModeLocal
		}
	}
	if c.Mode == initramfs.ModeLocal && len(c.Images) == 0 {
		return nil, bad("local mode needs an image on the stick: give --image")
	}
	if len(c.Consoles) == 0 {
		c.Consoles = DefaultConsoles
	}
	if c.MenuTimeout == 0 {
		c.MenuTimeout = DefaultMenuTimeout
	}
	after := cmp.Or(c.After, initramfs.DefaultStickAfter)

	tmp, err := os.MkdirTemp(filepath.Dir(c.Out), ".pxeswarm-usb-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	// Images: load or make their torrents, place them on the data
	// partition, 1 MiB aligned.
	type placed struct {
		im      *imager.Image
		sources []string
		torrent string // file in tmp
	}
	var ims []placed
	out := &USB{Path: c.Out, Config: initramfs.StickConfig{Version: initramfs.StickVersion, Mode: c.Mode, Server: c.Server, Default: c.Default}}
	var dataSize int64
	for i, ui := range c.Images {
		im, err := c.loadImage(ctx, log, ui, tmp)
		if err != nil {
			return nil, fmt.Errorf("%w: image %d: %w", ErrUSB, i+1, err)
		}
		name := cmp.Or(ui.Name, im.Name)
		tp := filepath.Join(tmp, fmt.Sprintf("%d.torrent", i))
		if err := im.WriteFile(tp); err != nil {
			return nil, err
		}
		out.Config.Images = append(out.Config.Images, initramfs.StickImage{
			Name: name, Torrent: "/pxeswarm/images/" + name + ".torrent", InfoHash: im.InfoHash.HexString(),
			Offset: dataSize, Length: im.Length, Target: c.Target, CreateTable: c.CreateTable,
			SeedFor: max(c.SeedFor, 0).String(), After: after, Trackers: c.Trackers,
		})
		ims = append(ims, placed{im, ui.Sources, tp})
		dataSize += (im.Length + mib - 1) / mib * mib
	}
	cfgJSON, err := json.MarshalIndent(out.Config, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := initramfs.ParseStickConfig(cfgJSON); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUSB, err)
	}

	// The ESP: what it carries plus room for FAT and a rebuilt
	// initramfs; at least 64 MiB (FAT32 wants 65525 clusters).
	files := map[string]string{
		"/EFI/BOOT/BOOTX64.EFI": c.SystemdBoot,
		"/pxeswarm/vmlinuz":     c.Kernel,
		"/pxeswarm/initramfs":   c.Initramfs,
	}
	for i, p := range ims {
		files[out.Config.Images[i].Torrent] = p.torrent
	}
	var payload int64
	for _, src := range files {
		st, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		payload += st.Size()
	}
	espSize := max(64*mib, (payload*5/4+16*mib+mib-1)/mib*mib)
	out.ESPSize, out.DataSize = espSize, dataSize
	out.ESPUUID = uuid.NewString()
	entry := func(mode string) string {
		var b strings.Builder
		for _, con := range c.Consoles {
			b.WriteString("console=" + con + " ")
		}
		fmt.Fprintf(&b, "panic=-1 pxeswarm.stick=%s pxeswarm.mode=%s", out.ESPUUID, mode)
		if c.Server != "" {
			b.WriteString(" pxeswarm.server=" + c.Server)
		}
		return b.String()
	}
	out.Cmdline = entry(c.Mode)
	title := map[string]string{
		initramfs.ModeLocal:   "pxeswarm: write the image from this stick",
		initramfs.ModeNetwork: "pxeswarm: image this machine from the network",
	}
	text := map[string]string{
		"/loader/entries/pxeswarm-" + c.Mode + ".conf": fmt.Sprintf("title %s\nlinux /pxeswarm/vmlinuz\ninitrd /pxeswarm/initramfs\noptions %s\n", title[c.Mode], out.Cmdline),
		initramfs.StickFile:                            string(cfgJSON) + "\n",
	}
	timeout := "0"
	if len(c.Images) > 0 {
		other := initramfs.ModeNetwork
		if c.Mode == initramfs.ModeNetwork {
			other = initramfs.ModeLocal
		}
		text["/loader/entries/pxeswarm-"+other+".conf"] = fmt.Sprintf("title %s\nlinux /pxeswarm/vmlinuz\ninitrd /pxeswarm/initramfs\noptions %s\n", title[other], entry(other))
		if c.MenuTimeout > 0 {
			timeout = fmt.Sprint(c.MenuTimeout)
		}
	}
	text["/loader/loader.conf"] = fmt.Sprintf("default pxeswarm-%s.conf\ntimeout %s\nconsole-mode keep\n", c.Mode, timeout)

	// The disk: a GPT laid out and written by partition (as the agent
	// writes an image's table), then FAT32 on the ESP, then the images.
	layout := imager.Layout{Table: "gpt", Parts: []imager.PartInfo{{Number: 1, Size: espSize,
		Type: string(gpt.EFISystemPartition), Label: initramfs.StickESPLabel, GUID: strings.ToUpper(out.ESPUUID)}}}
	if dataSize > 0 {
		layout.Parts = append(layout.Parts, imager.PartInfo{Number: 2, Size: dataSize, Type: string(gpt.LinuxFilesystem), Label: initramfs.StickDataLabel})
	}
	const sector = 512
	size := mib + espSize + dataSize + mib // 1 MiB before, 1 MiB for the backup GPT
	out.Size = size
	tmpOut := filepath.Join(tmp, "stick.img")
	tab, err := partition.PlanTable(layout, size, sector)
	if err != nil {
		return nil, fmt.Errorf("%w: partition table: %w", ErrUSB, err)
	}
	if err := writeTable(tmpOut, size, tab); err != nil {
		return nil, fmt.Errorf("%w: partition table: %w", ErrUSB, err)
	}
	esp := tab.Partitions[0]
	if err := writeESPAt(tmpOut, esp.Start, esp.Size, initramfs.StickESPLabel, 1, files, text); err != nil {
		return nil, fmt.Errorf("%w: ESP: %w", ErrUSB, err)
	}

	// Image bytes into the data partition, each piece checked against
	// its torrent on the way: a wrong source file fails here, not in the
	// classroom.
	var done int64
	for i, p := range ims {
		si := out.Config.Images[i]
		if err := c.copyImage(ctx, p.im, p.sources, tmpOut, tab.Partitions[1].Start+si.Offset, func(n int64) {
			if c.Progress != nil {
				c.Progress(done+n, dataSize)
			}
		}); err != nil {
			return nil, fmt.Errorf("%w: image %s: %w", ErrUSB, si.Name, err)
		}
		done += p.im.Length
		log.Info("usb: image on the stick", "image", si.Name, "bytes", bytesize.Format(p.im.Length))
	}
	if err := os.Rename(tmpOut, c.Out); err != nil {
		return nil, err
	}
	log.Info("usb: stick image written", "out", c.Out, "size", bytesize.Format(size), "mode", c.Mode, "images", len(ims), "esp_partuuid", out.ESPUUID)
	return out, nil
}

// loadImage loads a torrent (checking its sources' sizes) or hashes a raw
// image into one.
func (c USBConfig) loadImage(ctx context.Context, log *slog.Logger, ui USBImage, tmp string) (*imager.Image, error) {
	if len(ui.Sources) == 0 {
		return nil, errors.New("no source files")
	}
	if ui.Torrent == "" {
		if len(ui.Sources) != 1 {
			return nil, errors.New("a multi-part image needs its torrent (make one with pxeswarm mktorrent)")
		}
		name := cmp.Or(ui.Name, strings.TrimSuffix(filepath.Base(ui.Sources[0]), filepath.Ext(ui.Sources[0])))
		return imager.Create(ctx, log, imager.CreateConfig{Name: name, Sources: ui.Sources, PieceLength: ui.PieceLength})
	}
	im, err := imager.LoadFile(ui.Torrent)
	if err != nil {
		return nil, err
	}
	if len(ui.Sources) != len(im.Files) {
		return nil, fmt.Errorf("torrent %s has %d parts but %d source files were given: give one per part, in order", ui.Torrent, len(im.Files), len(ui.Sources))
	}
	for i, src := range ui.Sources {
		dev, err := imager.OpenSource(src)
		if err != nil {
			return nil, err
		}
		size := dev.Size
		dev.Close()
		if size < im.Files[i].Span() {
			return nil, fmt.Errorf("source %s has %d bytes, the torrent's part %d needs %d: is it the right file?", src, size, i+1, im.Files[i].Span())
		}
	}
	return im, nil
}

// createDisk creates the raw disk image file path (emptying one that is
// there) and makes it size bytes long, sparse. The caller closes it.
func createDisk(path string, size int64) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// writeTable makes the stick file and writes its partition table.
func writeTable(path string, size int64, tab *partition.Table) error {
	f, err := createDisk(path, size)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := partition.WriteTable(f, size, tab); err != nil {
		return err
	}
	return f.Close()
}

// copyImage copies an image's source files to the stick file from byte
// off on (its files back to back), through imager's checked copy.
func (c USBConfig) copyImage(ctx context.Context, im *imager.Image, sources []string, stick string, off int64, progress func(done int64)) error {
	devs, err := im.OpenSources(sources)
	if err != nil {
		return err
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	// The stick holds the torrent's files as they are: a used-block
	// part's extents packed, which the agent maps onto the target.
	from := im.SourceParts(devs)
	var places []partition.Place
	for _, f := range im.Files {
		places = append(places, partition.Place{Path: stick, Offset: off + f.Offset, Size: f.Length, Length: f.Length})
	}
	to, closeTo, err := partition.OpenParts(places)
	if err != nil {
		return err
	}
	defer closeTo()
	if err := (imager.CopyConfig{Image: im, From: from, To: to, ProgressEvery: 5 * time.Second,
		Progress: func(p imager.Progress) { progress(p.Done) }}).Run(ctx); err != nil {
		return err
	}
	return closeTo()
}
