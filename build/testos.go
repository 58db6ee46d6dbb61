package build

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/qemu"
	"github.com/pxeswarm/pxeswarm/partition"
)

// NewSystemMarker is printed by a booted test OS, followed by its digest.
const NewSystemMarker = "NEW SYSTEM BOOTED"

// TestOSConfig describes the small bootable OS the classroom tests and
// the demo write onto their machines: a GPT disk with an EFI system
// partition (systemd-boot, Debian's kernel and an initramfs whose init
// prints NewSystemMarker and the image digest, then powers off) and a data
// partition of random bytes. Booting it under UEFI proves the machine runs
// what the swarm wrote.
type TestOSConfig struct {
	// Dir receives esp.img, data.img and testos.torrent.
	Dir string
	// Kernel; default Debian's newest /boot/vmlinuz-*.
	Kernel string
	// SystemdBoot is the EFI boot manager; default Debian's
	// systemd-boot-efi (/usr/lib/systemd/boot/efi/systemd-bootx64.efi).
	SystemdBoot string
	// ESPSize and DataSize in bytes; defaults 48 MiB and 32 MiB.
	ESPSize, DataSize int64
	// DataFiles, if above zero, makes the data partition an ext4
	// filesystem (mkfs.ext4 -d, e2fsprogs) holding that many files of
	// random bytes, on zeros: a golden disk whose partitions a capture
	// reads used blocks of. Zero: random bytes, as a raw partition.
	DataFiles int
	// PieceLength of the torrent; default 1 MiB.
	PieceLength int64
	// Trackers go into the torrent (the server overrides them in plans).
	Trackers []string
	// SecureBoot boots the ESP through Debian's signed shim and GRUB
	// (EFI/BOOT/BOOTX64.EFI is shim, grubx64.efi beside it, grub.cfg
	// loading the same kernel) instead of systemd-boot, which is not
	// signed: firmware with Secure Boot on refuses systemd-boot.
	SecureBoot bool
	// Shim and Grub for SecureBoot; defaults DefaultShim and
	// DefaultDiskGrub.
	Shim, Grub string
}

// DefaultShim is Debian's Microsoft-signed shim (shim-signed);
// DefaultDiskGrub Debian's signed GRUB for booting from a disk
// (grub-efi-amd64-signed). They come from the same release (SBAT).
const (
	DefaultShim     = "/usr/lib/shim/shimx64.efi.signed"
	DefaultDiskGrub = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
)

// TestOS is a built test OS image.
type TestOS struct {
	ESP, Data string // the two partition images
	Torrent   string
	Image     *imager.Image
	// Digest is what the booted system prints after NewSystemMarker:
	// the SHA-256 of the data partition, carried on the kernel command
	// line in the ESP's loader entry.
	Digest string
}

// Build makes the test OS image.
func (c TestOSConfig) Build(ctx context.Context, log *slog.Logger) (*TestOS, error) {
	if c.Kernel == "" {
		k, err := NewestKernel(DefaultBoot)
		if err != nil {
			return nil, err
		}
		c.Kernel = k
	}
	c.SystemdBoot = cmp.Or(c.SystemdBoot, DefaultSystemdBoot)
	if _, err := os.Stat(c.SystemdBoot); err != nil {
		return nil, fmt.Errorf("test OS: %w (install Debian's systemd-boot-efi package)", err)
	}
	if c.ESPSize == 0 {
		c.ESPSize = 48 << 20
	}
	if c.DataSize == 0 {
		c.DataSize = 32 << 20
	}
	if c.PieceLength == 0 {
		c.PieceLength = 1 << 20
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	out := &TestOS{ESP: filepath.Join(c.Dir, "esp.img"), Data: filepath.Join(c.Dir, "data.img"), Torrent: filepath.Join(c.Dir, "testos.torrent")}

	// Data partition: random bytes or ext4 with files, hashed for the
	// marker.
	if c.DataFiles > 0 {
		if err := makeDataFS(ctx, out.Data, c.DataSize, c.DataFiles); err != nil {
			return nil, fmt.Errorf("test OS: data partition: %w", err)
		}
	} else {
		data := make([]byte, c.DataSize)
		if _, err := io.ReadFull(rand.Reader, data); err != nil {
			return nil, err
		}
		if err := os.WriteFile(out.Data, data, 0o644); err != nil {
			return nil, err
		}
	}
	data, err := os.ReadFile(out.Data)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	out.Digest = hex.EncodeToString(sum[:])

	initrd, err := qemu.BuildMarkerInitramfs(ctx, c.Dir)
	if err != nil {
		return nil, err
	}
	files := map[string]string{ // ESP path → host file
		"/EFI/BOOT/BOOTX64.EFI": c.SystemdBoot,
		"/vmlinuz":              c.Kernel,
		"/initrd.img":           initrd,
	}
	text := map[string]string{
		"/loader/loader.conf": "default testos.conf\ntimeout 0\nconsole-mode keep\n",
		"/loader/entries/testos.conf": "title pxeswarm test OS\nlinux /vmlinuz\ninitrd /initrd.img\n" +
			"options console=ttyS0 panic=-1 quiet pxeswarm.testos=" + out.Digest + "\n",
	}
	if c.SecureBoot {
		c.Shim, c.Grub = cmp.Or(c.Shim, DefaultShim), cmp.Or(c.Grub, DefaultDiskGrub)
		for _, f := range []string{c.Shim, c.Grub} {
			if _, err := os.Stat(f); err != nil {
				return nil, fmt.Errorf("test OS: %w (install Debian's shim-signed and grub-efi-amd64-signed)", err)
			}
		}
		files["/EFI/BOOT/BOOTX64.EFI"] = c.Shim
		files["/EFI/BOOT/grubx64.efi"] = c.Grub
		// Debian's GRUB reads $prefix (/EFI/debian) first, then the
		// directory it was loaded from.
		cfg := "set timeout=0\nlinux /vmlinuz console=ttyS0 panic=-1 quiet pxeswarm.testos=" + out.Digest + "\ninitrd /initrd.img\nboot\n"
		text["/EFI/debian/grub.cfg"] = cfg
		text["/EFI/BOOT/grub.cfg"] = cfg
	}
	if err := writeESP(out.ESP, c.ESPSize, files, text); err != nil {
		return nil, fmt.Errorf("test OS: ESP: %w", err)
	}
	im, err := imager.Create(ctx, log, imager.CreateConfig{
		Name: "testos", Sources: []string{out.ESP, out.Data}, Table: "gpt", PieceLength: c.PieceLength, Trackers: c.Trackers,
		Parts: []imager.PartInfo{
			{Number: 1, Type: string(gpt.EFISystemPartition), Label: "ESP"},
			{Number: 2, Type: string(gpt.LinuxFilesystem), Label: "data"},
		},
	})
	if err != nil {
		return nil, err
	}
	if err := im.WriteFile(out.Torrent); err != nil {
		return nil, err
	}
	out.Image = im
	log.Info("test OS built", "esp", out.ESP, "data", out.Data, "torrent", out.Torrent, "digest", out.Digest)
	return out, nil
}

// makeDataFS makes path an ext4 filesystem of size bytes holding n files
// of random bytes (1 KiB to 256 KiB) in two folders, on a file of zeros.
func makeDataFS(ctx context.Context, path string, size int64, n int) error {
	src, err := os.MkdirTemp(filepath.Dir(path), "datafiles-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	for i := range n {
		dir := filepath.Join(src, []string{"home", "opt"}[i%2])
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		var sz [2]byte
		rand.Read(sz[:])
		b := make([]byte, 1024+int(binary.LittleEndian.Uint16(sz[:]))*4)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file%03d.bin", i)), b, 0o644); err != nil {
			return err
		}
	}
	f, err := createDisk(path, size)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "data", "-d", src, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 -d: %w: %s (install e2fsprogs)", err, bytes.TrimSpace(out))
	}
	return nil
}

// WriteDisk lays the test OS out on a raw disk file of size bytes the way
// the agent does: the partition table from the image's layout, then each
// part at its partition's start. Tests use it to give a machine a disk
// that already holds the system.
func (t *TestOS) WriteDisk(path string, size int64) error {
	f, err := createDisk(path, size)
	if err != nil {
		return err
	}
	defer f.Close()
	tab, err := partition.PlanTable(t.Image.Layout, size, 512)
	if err != nil {
		return err
	}
	if err := partition.WriteTable(f, size, tab); err != nil {
		return err
	}
	for i, src := range []string{t.ESP, t.Data} {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(b, tab.Partitions[i].Start); err != nil {
			return err
		}
	}
	return f.Close()
}

// writeESP makes a FAT32 filesystem image holding the given files.
func writeESP(path string, size int64, files, text map[string]string) error {
	f, err := createDisk(path, size)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return writeESPAt(path, 0, size, "ESP", 0, files, text)
}

// writeESPAt formats the size bytes at byte start of the disk image path
// as FAT32 (formatFAT32; the partition's sectors are hidden) and fills it
// through go-diskfs with files (FAT path → host file) and text (FAT path
// → contents), then repairs what go-diskfs leaves wrong (finishFAT32).
// part is go-diskfs's partition number of that range: 0 for a bare
// filesystem image.
func writeESPAt(path string, start, size int64, label string, part int, files, text map[string]string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	var serial [4]byte
	if _, err := io.ReadFull(rand.Reader, serial[:]); err != nil {
		f.Close()
		return err
	}
	defer f.Close()
	g, err := formatFAT32(f, start, size, uint32(start/fatSector), label, binary.LittleEndian.Uint32(serial[:]))
	if err != nil {
		return err
	}
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadWrite))
	if err != nil {
		return err
	}
	fs, err := d.GetFilesystem(part)
	if err == nil {
		err = fillFAT(fs, files, text)
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := finishFAT32(f, start, g); err != nil {
		return err
	}
	return f.Close()
}

// fillFAT writes files (FAT path → host file) and text (FAT path →
// contents) into a FAT filesystem.
func fillFAT(fs filesystem.FileSystem, files, text map[string]string) error {
	put := func(name string, r io.Reader) error {
		dir := filepath.Dir(name)
		if dir != "/" {
			if err := fs.Mkdir(dir); err != nil {
				return fmt.Errorf("mkdir %s: %w", dir, err)
			}
		}
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		if _, err := io.Copy(f, r); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return f.Close()
	}
	for name, src := range files {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		err = put(name, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	for name, body := range text {
		if err := put(name, strings.NewReader(body)); err != nil {
			return err
		}
	}
	return nil
}
