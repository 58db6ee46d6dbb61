package initramfs

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// The rescue stick (`pxeswarm build usb`) is a GPT disk: an EFI system
// partition named StickESPLabel that holds systemd-boot, the kernel, the
// initramfs and StickFile, and optionally a raw partition named
// StickDataLabel holding image bytes at the offsets StickFile gives.
const (
	StickESPLabel  = partition.DefaultBootLabel // also marks it as the boot medium
	StickDataLabel = "PXESWARM-DATA"
	// StickFile is the stick's config on its ESP.
	StickFile = "/pxeswarm/stick.json"
	// StickVersion is the config format this agent reads.
	StickVersion = 1
)

// Stick modes: what a machine booted from the stick does.
const (
	// ModeNetwork: find the server by DHCP (or the baked-in URL) and
	// follow its plan, as after a PXE boot.
	ModeNetwork = "network"
	// ModeLocal: write an image from the stick's data partition, then
	// seed it to the LAN if a tracker is known.
	ModeLocal = "local"
)

// Defaults for a stick image's settings.
const (
	DefaultStickAfter   = "poweroff"
	DefaultStickSeedFor = 30 * time.Minute
)

// StickConfig is StickFile: what `pxeswarm build usb` put on the stick.
// It is not signed: whoever can write the stick can also replace the
// agent on it. Its images are pinned by info-hash and every byte copied
// from the stick is checked against the torrent's piece hashes.
type StickConfig struct {
	Version int `json:"version"`
	// Mode is ModeNetwork or ModeLocal; pxeswarm.mode= on the kernel
	// command line (the stick's second boot entry) overrides it.
	Mode string `json:"mode"`
	// Server is a baked-in server URL for networks whose DHCP cannot
	// carry the URL option (it also goes on the kernel command line).
	Server string `json:"server,omitempty"`
	// Default names the image local mode writes when the stick holds
	// several; empty: the person at the console chooses.
	Default string       `json:"default,omitempty"`
	Images  []StickImage `json:"images,omitempty"`
}

// StickImage is one image on the stick's data partition.
type StickImage struct {
	Name string `json:"name"`
	// Torrent is the image torrent's path on the ESP.
	Torrent string `json:"torrent"`
	// InfoHash pins the torrent (hex).
	InfoHash string `json:"info_hash"`
	// Offset is where the image's bytes (its files in torrent order)
	// start in the data partition.
	Offset int64 `json:"offset"`
	// Length is the image's bytes; checked against the torrent.
	Length int64 `json:"length"`
	// Target is where the image goes; empty: the one disk that can take
	// it, or the person at the console chooses among several.
	Target protocol.Target `json:"target"`
	// CreateTable makes the partition table from the image's layout.
	CreateTable bool `json:"create_table"`
	// SeedFor is how long to seed the written image when a tracker is
	// known (Go duration; "0s" never). Default DefaultStickSeedFor.
	SeedFor string `json:"seed_for,omitempty"`
	// After is "poweroff" (default), "reboot" or "shell". A machine
	// that reboots with the stick still in boots the stick again.
	After string `json:"after,omitempty"`
	// Trackers to announce to while seeding; empty: the server's
	// tracker (DHCP's URL or Server), else the torrent's.
	Trackers []string `json:"trackers,omitempty"`
}

// ErrBadStick: the stick's config is missing or malformed.
var ErrBadStick = errors.New("bad rescue stick config")

// ParseStickConfig reads and checks a StickFile. Errors wrap ErrBadStick
// and say how to fix the stick.
func ParseStickConfig(data []byte) (*StickConfig, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: rebuild the stick with `pxeswarm build usb`", ErrBadStick, fmt.Sprintf(format, args...))
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	var c StickConfig
	if err := dec.Decode(&c); err != nil {
		return nil, bad("%s: %v", StickFile, err)
	}
	if dec.More() {
		return nil, bad("%s: text after the JSON object", StickFile)
	}
	if c.Version != StickVersion {
		return nil, bad("%s is version %d, this agent reads version %d", StickFile, c.Version, StickVersion)
	}
	switch c.Mode {
	case ModeNetwork, ModeLocal:
	default:
		return nil, bad("mode %q: want %s or %s", clipText(c.Mode, 40), ModeNetwork, ModeLocal)
	}
	if c.Server != "" && !httpURL(c.Server) {
		return nil, bad("server %q: want an http URL such as http://198.18.0.1:8080", clipText(c.Server, 80))
	}
	if c.Mode == ModeLocal && len(c.Images) == 0 {
		return nil, bad("mode local but no images on the stick")
	}
	names := map[string]bool{}
	for i, im := range c.Images {
		where := fmt.Sprintf("image %d (%s)", i+1, clipText(im.Name, 40))
		switch {
		case im.Name == "" || len(im.Name) > 64 || strings.ContainsAny(im.Name, "/ \n"):
			return nil, bad("%s: a name of 1 to 64 characters without spaces or slashes", where)
		case names[im.Name]:
			return nil, bad("%s: the name is used twice", where)
		case !strings.HasPrefix(im.Torrent, "/") || strings.Contains(im.Torrent, ".."):
			return nil, bad("%s: torrent %q: want an absolute path on the stick's ESP", where, clipText(im.Torrent, 80))
		case len(im.InfoHash) != 40 || strings.Trim(strings.ToLower(im.InfoHash), "0123456789abcdef") != "":
			return nil, bad("%s: info_hash %q: want 40 hex digits", where, clipText(im.InfoHash, 60))
		case im.Offset < 0 || im.Length <= 0 || im.Offset > 1<<62 || im.Length > 1<<62:
			return nil, bad("%s: offset %d, length %d: want a place in the data partition", where, im.Offset, im.Length)
		}
		names[im.Name] = true
		if t := im.Target; t != (protocol.Target{}) {
			if err := t.Check(); err != nil {
				return nil, bad("%s: %v, or none to choose at the console", where, err)
			}
		}
		if im.SeedFor != "" {
			if d, err := time.ParseDuration(im.SeedFor); err != nil || d < 0 {
				return nil, bad("%s: seed_for %q: want a Go duration such as 30m or 0s", where, clipText(im.SeedFor, 40))
			}
		}
		switch im.After {
		case "", "poweroff", "reboot", "shell":
		default:
			return nil, bad("%s: after %q: want poweroff, reboot or shell", where, clipText(im.After, 40))
		}
		for _, tr := range im.Trackers {
			if !httpURL(tr) {
				return nil, bad("%s: tracker %q: want an http announce URL", where, clipText(tr, 80))
			}
		}
	}
	if c.Default != "" && !names[c.Default] {
		return nil, bad("default image %q is not on the stick", clipText(c.Default, 40))
	}
	return &c, nil
}

// seedFor is the image's seeding time.
func (im StickImage) seedFor() time.Duration {
	if im.SeedFor == "" {
		return DefaultStickSeedFor
	}
	d, _ := time.ParseDuration(im.SeedFor) // checked by ParseStickConfig
	return d
}

func (im StickImage) after() string { return cmp.Or(im.After, DefaultStickAfter) }

// stick is the rescue stick the machine booted from.
type stick struct {
	disk partition.Disk
	esp  partition.Partition
	data *partition.Partition // nil: no data partition
	cfg  *StickConfig
}

// readESPFile reads one file from the FAT filesystem of the stick's ESP,
// opening the partition read-only: nothing is mounted and nothing can be
// written.
func readESPFile(dev, name string, limit int64) ([]byte, error) {
	d, err := diskfs.Open(dev, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, fmt.Errorf("open the stick's ESP %s read-only: %w", dev, err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(0)
	if err != nil {
		return nil, fmt.Errorf("the stick's ESP %s: no FAT filesystem: %w", dev, err)
	}
	f, err := fs.OpenFile(name, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("%s on the stick's ESP %s: %w", name, dev, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s on the stick's ESP %s: %w", name, dev, err)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s on the stick's ESP %s is over %s", name, dev, bytesize.Format(limit))
	}
	// One read of exactly the file's size from its start: go-diskfs
	// (v1.9.4) returns bytes past the end of a file when a read starts
	// inside a cluster, which io.ReadAll's growing buffer does (a
	// torrent read back with 17 stray bytes).
	b := make([]byte, st.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("read %s on the stick's ESP %s: %w", name, dev, err)
	}
	return b, nil
}

// stickPart reads an image's bytes from the data partition at an offset.
// Writes fail: the stick is never written.
type stickPart struct {
	f    *os.File
	base int64
}

func (s stickPart) ReadAt(b []byte, off int64) (int, error) { return s.f.ReadAt(b, s.base+off) }
func (s stickPart) WriteAt([]byte, int64) (int, error) {
	return 0, errors.New("the rescue stick is never written")
}

// openStickImage opens the data partition read-only and returns one part
// per image file, for imager.CopyConfig.From.
func openStickImage(data partition.Partition, si StickImage, im *imager.Image) ([]imager.Part, io.Closer, error) {
	if si.Offset+im.Length > data.Size {
		return nil, nil, fmt.Errorf("%w: image %s needs bytes %d to %d of the data partition, which has %d", ErrBadStick,
			si.Name, si.Offset, si.Offset+im.Length, data.Size)
	}
	f, err := os.Open(data.Path)
	if err != nil {
		return nil, nil, fmt.Errorf("open the stick's data partition: %w", err)
	}
	parts := make([]imager.Part, len(im.Files))
	for i, fl := range im.Files {
		parts[i] = imager.Part{RW: stickPart{f: f, base: si.Offset + fl.Offset}, Length: fl.Length}
	}
	return parts, f, nil
}
