package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/atomicfile"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
)

// Spec says where an image comes from: an [[image]] of the site config or
// the body of POST /api/images. Paths are on the image host.
type Spec struct {
	// Name of the image. Default: for one raw source, its file name
	// without the extension (NameFromSource); else the torrent's name.
	Name string
	// Torrent is a .torrent file made with `pxeswarm mktorrent`. Empty:
	// made from the one raw source and cached in Config.Dir.
	Torrent string
	// Source files or block devices, one per image part, in order.
	Source []string
	// PieceLength of a torrent made from Source; 0: by size
	// (imager.PieceLengthFor).
	PieceLength int64
}

// name is the name the spec asks for before its torrent is read ("" when
// it comes from the torrent).
func (sp Spec) name() string {
	if sp.Name == "" && sp.Torrent == "" && len(sp.Source) == 1 {
		return NameFromSource(sp.Source[0])
	}
	return sp.Name
}

// NameFromSource is the default name of an image made from one raw
// source: its file name without the extension.
func NameFromSource(path string) string {
	return strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
}

// ValidName reports whether s may name an image: 1–128 letters, digits,
// '.', '_' and '-', not starting with '.'. Names go into URLs and the
// torrent cache's file names.
func ValidName(s string) bool { return protocol.ValidImageName(s) }

func nameRule(name string) string {
	if len(name) > 60 {
		name = name[:60] + "…"
	}
	return fmt.Sprintf("image name %q: names may hold only letters, digits, '.', '_' and '-' (at most 128, not starting with '.')", name)
}

// Add loads the image sp describes and publishes it (Load, then Put). Two
// Adds of one name do not both load: the second gets ErrExists at once.
func (c *Catalog) Add(ctx context.Context, sp Spec) (*Image, error) {
	if name := sp.name(); ValidName(name) {
		if err := c.reserve(name); err != nil {
			return nil, err
		}
		defer c.release(name)
	}
	im, err := c.Load(ctx, sp)
	if err != nil {
		return nil, err
	}
	if err := c.Put(im); err != nil {
		return nil, err
	}
	return im, nil
}

func (c *Catalog) reserve(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.index(name) >= 0 || c.pending[name] {
		return fmt.Errorf("%w: an image called %s is published or being added already: pick another name, or remove it first (DELETE /api/images/%s)", ErrExists, name, name)
	}
	c.pending[name] = true
	return nil
}

func (c *Catalog) release(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, name)
}

// Load reads the image sp describes without publishing it: it opens the
// torrent, or makes one from the raw source (hashing it once; the torrent
// is cached in Config.Dir while the source keeps its size and modification
// time), and checks the sources against it: one per part, each a file of
// exactly its part's size or a block device at least that large, and for
// a given torrent a few pieces hashed (imager.SpotCheck). Every problem
// with the spec wraps ErrBadImage and says what to fix.
func (c *Catalog) Load(ctx context.Context, sp Spec) (*Image, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadImage, fmt.Sprintf(format, args...))
	}
	name := sp.name()
	if name != "" && !ValidName(name) {
		return nil, bad("%s", nameRule(name))
	}
	if len(sp.Source) == 0 {
		return nil, bad("the server seeds every image: list its source file(s)")
	}
	if sp.Torrent == "" && len(sp.Source) != 1 {
		return nil, bad("a torrent is needed for a multi-part image (make one with pxeswarm mktorrent)")
	}
	if sp.PieceLength != 0 {
		if err := imager.CheckPieceLength(sp.PieceLength); err != nil {
			return nil, bad("piece length: %v", err)
		}
	}
	for _, src := range sp.Source {
		st, err := os.Stat(src)
		if err != nil {
			return nil, bad("source: %v", err)
		}
		if m := st.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
			return nil, bad("source %s is not a file or a block device: name the image file or the partition", src)
		}
	}
	path, made := sp.Torrent, false
	if path == "" {
		if !ValidName(name) {
			return nil, bad("%s", nameRule(name))
		}
		if c.cfg.Dir == "" {
			return nil, bad("no torrent given and no folder to make one in: make one with pxeswarm mktorrent")
		}
		var err error
		if path, err = c.makeTorrent(ctx, name, sp.Source[0], sp.PieceLength); err != nil {
			return nil, err
		}
		made = true
	}
	raw, mod, err := readTorrent(path)
	if err != nil {
		return nil, bad("%v", err)
	}
	im, err := imager.Parse(raw)
	if err != nil {
		return nil, bad("torrent %s: %v", path, err)
	}
	if len(im.Files) != len(sp.Source) {
		return nil, bad("the torrent has %d parts but source lists %d files: list one source per part, in order", len(im.Files), len(sp.Source))
	}
	if name == "" {
		if name = im.Name; !ValidName(name) {
			return nil, bad("%s, from the torrent: give the image a name", nameRule(name))
		}
	}
	devs, err := im.OpenSources(sp.Source)
	if err != nil {
		return nil, bad("%v", err)
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	if !made {
		if err := im.SpotCheck(im.SourceParts(devs)); err != nil {
			return nil, bad("%v", err)
		}
	}
	return &Image{Name: name, Image: im, Torrent: raw, TorrentPath: path, Source: slices.Clone(sp.Source),
		WebSeed: c.cfg.WebSeed, ModTime: mod}, nil
}

// readTorrent reads a torrent file of at most imager.MaxTorrentBytes.
func readTorrent(path string) ([]byte, time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("torrent: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("torrent: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() > imager.MaxTorrentBytes {
		return nil, time.Time{}, fmt.Errorf("torrent %s is not a torrent file (a regular file of at most %s): name the .torrent pxeswarm mktorrent wrote",
			path, bytesize.Format(imager.MaxTorrentBytes))
	}
	raw, err := io.ReadAll(io.LimitReader(f, imager.MaxTorrentBytes))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read torrent %s: %w", path, err)
	}
	return raw, st.ModTime(), nil
}

// torrentCache is the .json kept beside a torrent made from a raw source.
type torrentCache struct {
	Source      string    `json:"source"`
	Size        int64     `json:"size"`
	ModTime     time.Time `json:"mod_time"`
	PieceLength int64     `json:"piece_length"`
	InfoHash    string    `json:"info_hash"`
}

// makeTorrent returns the path of a torrent of src called name: the cached
// one in Dir if src is unchanged, else a new one (hashing all of src).
func (c *Catalog) makeTorrent(ctx context.Context, name, src string, piece int64) (string, error) {
	log := c.log
	if err := os.MkdirAll(c.cfg.Dir, 0o755); err != nil {
		return "", err
	}
	st, err := os.Stat(src)
	if err != nil {
		return "", err
	}
	size := st.Size()
	if dev, err := imager.OpenSource(src); err == nil {
		size = dev.Size
		dev.Close()
	}
	if piece == 0 {
		piece = imager.PieceLengthFor(size)
	}
	want := torrentCache{Source: src, Size: size, ModTime: st.ModTime().UTC(), PieceLength: piece}
	path := filepath.Join(c.cfg.Dir, name+".torrent")
	meta := path + ".json"
	if cachedTorrent(meta, path, want) {
		log.Info("image: torrent cached", "image", name, "torrent", path)
		return path, nil
	}
	log.Info("image: making torrent (hashing the whole source once; cached afterwards)", "image", name, "source", src, "size", bytesize.Format(size))
	last := time.Now()
	im, err := imager.Create(ctx, log, imager.CreateConfig{Name: name, Sources: []string{src}, PieceLength: piece,
		Progress: func(p imager.Progress) {
			if time.Since(last) >= 5*time.Second {
				last = time.Now()
				log.Info("image: hashing", "image", name, "progress", p.Line())
			}
		}})
	if err != nil {
		return "", fmt.Errorf("image %s: make torrent from %s: %w", name, src, err)
	}
	if err := im.WriteFile(path); err != nil {
		return "", err
	}
	want.InfoHash = im.InfoHash.HexString()
	b, _ := json.MarshalIndent(want, "", "  ")
	if err := atomicfile.Write(meta, b, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// cachedTorrent says whether the torrent at path is the one makeTorrent
// would make for want: its .json names the same source, size, modification
// time and piece length, and the torrent itself parses to that size (of
// its one part's partition) and piece length and to the info-hash the
// .json recorded when it was made.
// A cache that was edited, truncated or swapped for another torrent is
// not trusted (Load skips the spot check for a torrent it made), so the
// source is hashed again.
func cachedTorrent(meta, path string, want torrentCache) bool {
	b, err := os.ReadFile(meta)
	if err != nil || len(b) > 64<<10 {
		return false
	}
	var have torrentCache
	if json.Unmarshal(b, &have) != nil {
		return false
	}
	recorded := have.InfoHash
	have.InfoHash = ""
	if have != want || recorded == "" {
		return false
	}
	raw, _, err := readTorrent(path)
	if err != nil {
		return false
	}
	im, err := imager.Parse(raw)
	// A used-block torrent's file is shorter than its source: compare
	// the partition the part spans.
	return err == nil && im.InfoHash.HexString() == recorded && len(im.Files) == 1 &&
		im.Files[0].Span() == want.Size && im.PieceLength == want.PieceLength
}
