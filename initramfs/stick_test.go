package initramfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/pxeswarm/pxeswarm/protocol"
)

func goodStick() StickConfig {
	return StickConfig{Version: StickVersion, Mode: ModeLocal, Server: "http://198.18.0.1:8080", Images: []StickImage{
		{Name: "lab", Torrent: "/pxeswarm/images/lab.torrent", InfoHash: strings.Repeat("ab", 20), Offset: 0, Length: 1 << 20,
			Target: protocol.Target{Disk: "first"}, CreateTable: true, SeedFor: "10m", After: "reboot"},
		{Name: "exam", Torrent: "/pxeswarm/images/exam.torrent", InfoHash: strings.Repeat("cd", 20), Offset: 1 << 20, Length: 5},
	}}
}

func TestParseStickConfig(t *testing.T) {
	enc := func(c StickConfig) []byte {
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	got, err := ParseStickConfig(enc(goodStick()))
	if err != nil {
		t.Fatalf("ParseStickConfig(good) = %v", err)
	}
	if got.Images[1].seedFor() != DefaultStickSeedFor || got.Images[1].after() != DefaultStickAfter || got.Images[0].seedFor() != 10*time.Minute {
		t.Errorf("defaults: seed_for %v, after %q", got.Images[1].seedFor(), got.Images[1].after())
	}
	for name, mut := range map[string]func(c *StickConfig){
		"version":         func(c *StickConfig) { c.Version = 2 },
		"mode":            func(c *StickConfig) { c.Mode = "usb" },
		"server":          func(c *StickConfig) { c.Server = "198.18.0.1" },
		"local, no image": func(c *StickConfig) { c.Images = nil },
		"default":         func(c *StickConfig) { c.Default = "nope" },
		"name":            func(c *StickConfig) { c.Images[0].Name = "a b" },
		"same name":       func(c *StickConfig) { c.Images[1].Name = "lab" },
		"torrent path":    func(c *StickConfig) { c.Images[0].Torrent = "../x.torrent" },
		"info hash":       func(c *StickConfig) { c.Images[0].InfoHash = "xyz" },
		"length":          func(c *StickConfig) { c.Images[0].Length = 0 },
		"offset":          func(c *StickConfig) { c.Images[0].Offset = -1 },
		"target":          func(c *StickConfig) { c.Images[0].Target = protocol.Target{Disk: "sda", Label: "x"} },
		"seed_for":        func(c *StickConfig) { c.Images[0].SeedFor = "forever" },
		"after":           func(c *StickConfig) { c.Images[0].After = "halt" },
		"tracker":         func(c *StickConfig) { c.Images[0].Trackers = []string{"udp://x"} },
	} {
		c := goodStick()
		mut(&c)
		if _, err := ParseStickConfig(enc(c)); !errors.Is(err, ErrBadStick) || !strings.Contains(err.Error(), "pxeswarm build usb") {
			t.Errorf("ParseStickConfig(bad %s) = %v, want ErrBadStick saying to rebuild", name, err)
		}
	}
	for _, raw := range []string{"", "{", `{"version":1,"mode":"network","extra":1}`, `{"version":1,"mode":"network"} {}`} {
		if _, err := ParseStickConfig([]byte(raw)); !errors.Is(err, ErrBadStick) {
			t.Errorf("ParseStickConfig(%q) = %v, want ErrBadStick", raw, err)
		}
	}
	c := goodStick()
	c.Mode, c.Images = ModeNetwork, nil
	if _, err := ParseStickConfig(enc(c)); err != nil {
		t.Errorf("a network stick without images: %v", err)
	}
}

func FuzzParseStickConfig(f *testing.F) {
	b, _ := json.Marshal(goodStick())
	f.Add(b)
	f.Add([]byte(`{"version":1,"mode":"network"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseStickConfig(data)
		if err != nil {
			if !errors.Is(err, ErrBadStick) {
				t.Fatalf("error %v does not wrap ErrBadStick", err)
			}
			return
		}
		// What is accepted is usable: modes, names and pins are sound.
		if c.Mode != ModeLocal && c.Mode != ModeNetwork {
			t.Fatalf("accepted mode %q", c.Mode)
		}
		for _, im := range c.Images {
			if im.Name == "" || im.Length <= 0 || im.Offset < 0 || len(im.InfoHash) != 40 || im.seedFor() < 0 {
				t.Fatalf("accepted image %+v", im)
			}
		}
	})
}

// TestChoose: the console menu lists the items, asks again after
// anything but a number in range, and reports the choice; no input at
// all is ErrNoChoice.
func TestChoose(t *testing.T) {
	var out bytes.Buffer
	a := &agent{cfg: Config{Input: strings.NewReader("x\r\n7\n\r 2 \r")}, log: infoLogger(t), con: console(&out)}
	i, err := a.choose(context.Background(), "which disk", []string{"/dev/vda (128MiB)", "/dev/vdb (192MiB)"})
	if err != nil || i != 1 {
		t.Fatalf("choose = %d, %v, want 1", i, err)
	}
	for _, want := range []string{MarkChoose + " which disk", "  1) /dev/vda (128MiB)", "  2) /dev/vdb (192MiB)",
		`"x" is not a number from 1 to 2.`, `"7" is not a number`, MarkChosen + " 2 /dev/vdb (192MiB)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console lacks %q:\n%s", want, out.String())
		}
	}
	a = &agent{cfg: Config{Input: strings.NewReader("")}, log: infoLogger(t), con: console(io.Discard)}
	if _, err := a.choose(context.Background(), "which", []string{"a", "b"}); !errors.Is(err, ErrNoChoice) {
		t.Errorf("choose with no input = %v, want ErrNoChoice", err)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	a = &agent{cfg: Config{Input: pr}, log: infoLogger(t), con: console(io.Discard)}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.choose(ctx, "which", []string{"a", "b"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("choose with nobody typing = %v, want the context's end", err)
	}
}

// TestReadESPFile reads a file from a FAT32 filesystem that fills its
// device, as the stick's ESP partition node does, and refuses what is
// over the limit or missing.
func TestReadESPFile(t *testing.T) {
	img := filepath.Join(t.TempDir(), "esp.img")
	d, err := diskfs.Create(img, 64<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: StickESPLabel})
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Mkdir("/pxeswarm"); err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenFile(StickFile, os.O_CREATE|os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte(`{"version":1,"mode":"network"}`))
	f.Close()
	d.Close()
	before := fileBytes(t, img)
	b, err := readESPFile(img, StickFile, 1<<10)
	if err != nil || string(b) != `{"version":1,"mode":"network"}` {
		t.Fatalf("readESPFile = %q, %v", b, err)
	}
	if _, err := readESPFile(img, StickFile, 10); err == nil || !strings.Contains(err.Error(), "over") {
		t.Errorf("readESPFile over its limit = %v, want an error", err)
	}
	if _, err := readESPFile(img, "/nope.json", 10); err == nil {
		t.Errorf("readESPFile of a missing file: no error")
	}
	if !bytes.Equal(before, fileBytes(t, img)) {
		t.Errorf("reading the ESP changed its bytes")
	}
}

func fileBytes(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
