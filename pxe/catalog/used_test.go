package catalog

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// TestLoadUsedBlocks: `pxeswarm serve`'s catalog with a filesystem
// image. A torrent it makes from the raw source ships only the used
// blocks, and is taken from its cache on the next load (not hashed
// again). A used-block torrent from mktorrent passes the spot check with
// its own source and fails it with another filesystem of the same size.
func TestLoadUsedBlocks(t *testing.T) {
	const size = 24 << 20
	dir := t.TempDir()
	src := fstest.RandomFile(t, "lab.img", size, 1)
	v := fstest.MakeExt(t, src, fstest.NewFiles(t, 12, 400<<10), "-t", "ext4")
	used := v.Used(t, src)

	cache := filepath.Join(dir, "cache")
	c := New(Config{Dir: cache}, testlog.New(t))
	im, err := c.Load(context.Background(), Spec{Source: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	f := im.Image.Files[0]
	if f.Part.Filesystem != "ext4" || len(f.Part.Extents) == 0 || f.Part.Size != size || im.Image.Length < used || im.Image.Length > used+used/20 {
		t.Fatalf("made torrent: %s, %d extents, part size %d, length %d; want ext4 extents, size %d, about the %d bytes used",
			f.Part.Filesystem, len(f.Part.Extents), f.Part.Size, im.Image.Length, size, used)
	}
	// Loaded again: the cached torrent, not a new one.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(im.TorrentPath, old, old); err != nil {
		t.Fatal(err)
	}
	again, err := New(Config{Dir: cache}, testlog.New(t)).Load(context.Background(), Spec{Source: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	if again.Image.InfoHash != im.Image.InfoHash || !again.ModTime.Equal(old) {
		t.Errorf("second load of an unchanged filesystem image made its torrent again (modified %v, want the cached one of %v)", again.ModTime, old)
	}

	// A torrent from mktorrent (imager.Create, the same default).
	given, err := imager.Create(context.Background(), slog.New(slog.DiscardHandler), imager.CreateConfig{Name: "lab", Sources: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	tp := filepath.Join(dir, "lab.torrent")
	if err := given.WriteFile(tp); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Load(context.Background(), Spec{Torrent: tp, Source: []string{src}}); err != nil {
		t.Errorf("Load(used-block torrent, its source) = %v, want it accepted", err)
	}
	other := fstest.RandomFile(t, "other.img", size, 2)
	fstest.MakeExt(t, other, fstest.NewFiles(t, 10, 300<<10), "-t", "ext4")
	if _, err := c.Load(context.Background(), Spec{Torrent: tp, Source: []string{other}}); !errors.Is(err, ErrBadImage) || !strings.Contains(err.Error(), "differs from the torrent") {
		t.Errorf("Load(used-block torrent, another filesystem) = %v, want ErrBadImage: a piece differs from the torrent", err)
	}
}
