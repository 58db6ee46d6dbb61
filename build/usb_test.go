package build

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/initramfs"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/partition"
)

// readFAT reads one file from the FAT filesystem at the given partition
// of a disk image.
func readFAT(t *testing.T, img string, part int, name string) string {
	t.Helper()
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(part)
	if err != nil {
		t.Fatalf("%s partition %d: %v", img, part, err)
	}
	f, err := fs.OpenFile(name, os.O_RDONLY)
	if err != nil {
		t.Fatalf("%s on the ESP: %v", name, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestUSB builds a stick with two images (a raw one and a two-part
// torrent) and reads it back as the agent would: the GPT names the ESP
// and the data partition, the ESP holds the boot files and a config the
// agent accepts, the boot entries name the ESP's PARTUUID, and each
// image's bytes sit at their offset in the data partition.
func TestUSB(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int, seed byte) string {
		p := filepath.Join(dir, name)
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kernel, initrd, sdboot := write("vmlinuz", 3<<20, 1), write("initramfs", 5<<20, 2), write("sd.efi", 100<<10, 3)
	raw := write("lab.img", 3<<20+512, 4)
	espImg, dataImg := write("esp.img", 2<<20, 5), write("data.img", 1<<20, 6)
	ctx := context.Background()
	im2, err := imager.Create(ctx, testlog.New(t), imager.CreateConfig{Name: "twopart", Sources: []string{espImg, dataImg}, Table: "gpt", PieceLength: imager.MinPieceLength})
	if err != nil {
		t.Fatal(err)
	}
	tp := filepath.Join(dir, "twopart.torrent")
	if err := im2.WriteFile(tp); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "stick.img")
	res, err := USBConfig{Out: out, Kernel: kernel, Initramfs: initrd, SystemdBoot: sdboot, Server: "http://198.18.0.1:8080",
		Images:   []USBImage{{Sources: []string{raw}, PieceLength: imager.MinPieceLength}, {Torrent: tp, Sources: []string{espImg, dataImg}}},
		Consoles: []string{"ttyS0"}}.Build(ctx, testlog.New(t))
	if err != nil {
		t.Fatalf("Build: %v", err)
	}

	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if st.Size() != res.Size {
		t.Errorf("stick is %d bytes, Build says %d", st.Size(), res.Size)
	}
	tab, err := partition.ReadTable(f, st.Size(), 512)
	if err != nil {
		t.Fatalf("the stick's partition table: %v", err)
	}
	if len(tab.Partitions) != 2 || tab.Partitions[0].Label != initramfs.StickESPLabel || tab.Partitions[1].Label != initramfs.StickDataLabel {
		t.Fatalf("partitions %+v: want %s and %s", tab.Partitions, initramfs.StickESPLabel, initramfs.StickDataLabel)
	}
	if !strings.EqualFold(tab.Partitions[0].GUID, res.ESPUUID) {
		t.Errorf("ESP PARTUUID %s, Build says %s", tab.Partitions[0].GUID, res.ESPUUID)
	}

	// The ESP, as the agent reads it.
	cfg, err := initramfs.ParseStickConfig([]byte(readFAT(t, out, 1, initramfs.StickFile)))
	if err != nil {
		t.Fatalf("stick config: %v", err)
	}
	if cfg.Mode != initramfs.ModeLocal || cfg.Server != "http://198.18.0.1:8080" || len(cfg.Images) != 2 {
		t.Errorf("stick config %+v: want local mode, the server, two images", cfg)
	}
	for _, f := range []string{"/EFI/BOOT/BOOTX64.EFI", "/pxeswarm/vmlinuz", "/pxeswarm/initramfs"} {
		src := map[string]string{"/EFI/BOOT/BOOTX64.EFI": sdboot, "/pxeswarm/vmlinuz": kernel, "/pxeswarm/initramfs": initrd}[f]
		want, _ := os.ReadFile(src)
		if readFAT(t, out, 1, f) != string(want) {
			t.Errorf("%s on the ESP differs from %s", f, src)
		}
	}
	loader := readFAT(t, out, 1, "/loader/loader.conf")
	if !strings.Contains(loader, "default pxeswarm-local.conf") || !strings.Contains(loader, "timeout 3") {
		t.Errorf("loader.conf = %q: want the local entry by default and a 3 s menu", loader)
	}
	for _, mode := range []string{"local", "network"} {
		e := readFAT(t, out, 1, "/loader/entries/pxeswarm-"+mode+".conf")
		for _, want := range []string{"pxeswarm.stick=" + res.ESPUUID, "pxeswarm.mode=" + mode, "pxeswarm.server=http://198.18.0.1:8080", "console=ttyS0"} {
			if !strings.Contains(e, want) {
				t.Errorf("%s entry %q lacks %s", mode, e, want)
			}
		}
	}

	// Each image's bytes at its offset in the data partition, and its
	// torrent on the ESP pinned by the config.
	data := tab.Partitions[1].Start
	for i, srcs := range [][]string{{raw}, {espImg, dataImg}} {
		si := cfg.Images[i]
		im, err := imager.Parse([]byte(readFAT(t, out, 1, si.Torrent)))
		if err != nil || im.InfoHash.HexString() != si.InfoHash || im.Length != si.Length {
			t.Fatalf("image %s: torrent on the ESP %v, info-hash %s vs %s", si.Name, err, im.InfoHash.HexString(), si.InfoHash)
		}
		off := data + si.Offset
		for _, s := range srcs {
			want, _ := os.ReadFile(s)
			got := make([]byte, len(want))
			if _, err := f.ReadAt(got, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("image %s: %s differs on the data partition", si.Name, filepath.Base(s))
			}
			off += int64(len(want))
		}
	}
	if cfg.Images[0].Name != "lab" || cfg.Images[1].Name != "twopart" || cfg.Images[1].Offset%(1<<20) != 0 {
		t.Errorf("images %+v: want lab then twopart, 1 MiB aligned", cfg.Images)
	}

	// Bad input: a local stick without images, a missing initramfs, and a
	// torrent whose sources do not match.
	for name, c := range map[string]USBConfig{
		"local without images": {Out: out, Kernel: kernel, Initramfs: initrd, SystemdBoot: sdboot, Mode: initramfs.ModeLocal},
		"no initramfs":         {Out: out, Kernel: kernel, Initramfs: filepath.Join(dir, "nope"), SystemdBoot: sdboot},
		"wrong sources":        {Out: out, Kernel: kernel, Initramfs: initrd, SystemdBoot: sdboot, Images: []USBImage{{Torrent: tp, Sources: []string{espImg}}}},
	} {
		if _, err := c.Build(ctx, testlog.New(t)); !errors.Is(err, ErrUSB) {
			t.Errorf("Build(%s) = %v, want ErrUSB", name, err)
		}
	}
}
