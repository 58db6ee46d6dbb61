package catalog

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// honestCache makes a torrent of src through the catalog's cache in
// cache and returns the cached torrent's and .json's bytes and the
// info-hash the cache must always give for src.
func honestCache(t testing.TB, cache, src string) (torrent, meta []byte, hash string) {
	t.Helper()
	c := New(Config{Dir: cache}, testlog.New(t))
	im, err := c.Load(context.Background(), Spec{Source: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	torrent, _ = os.ReadFile(im.TorrentPath)
	meta, _ = os.ReadFile(im.TorrentPath + ".json")
	return torrent, meta, im.Image.InfoHash.HexString()
}

// TestTorrentCacheSwapped: a cached torrent replaced by another image's
// torrent of the same size (its .json left as it was) is not served for
// the source; the source is hashed again. The catalog skips the spot check
// for a torrent it made, so a trusted swap would seed wrong pieces.
func TestTorrentCacheSwapped(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	src := writeRandom(t, dir, "lab.img", 512<<10, 1)
	_, _, hash := honestCache(t, cache, src)
	other := writeRandom(t, dir, "other.img", 512<<10, 2)
	otherTorrent, _, _ := honestCache(t, filepath.Join(dir, "other"), other)
	if err := os.WriteFile(filepath.Join(cache, "lab.torrent"), otherTorrent, 0o644); err != nil {
		t.Fatal(err)
	}
	c := New(Config{Dir: cache}, testlog.New(t))
	im, err := c.Load(context.Background(), Spec{Source: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	if got := im.Image.InfoHash.HexString(); got != hash {
		t.Errorf("catalog served the swapped torrent %s for lab.img, want its own %s", got, hash)
	}
}

// FuzzTorrentCache: whatever the cache folder holds in the torrent and its
// .json (edited, truncated, another image's, garbage), Load of the source
// never panics and gives the source's own torrent.
func FuzzTorrentCache(f *testing.F) {
	dir := f.TempDir()
	src := writeRandom(f, dir, "lab.img", 512<<10, 1)
	torrent, meta, want := honestCache(f, filepath.Join(dir, "honest"), src)
	// Another image's torrent of the same size; named lab, as a swap would be.
	other := writeRandom(f, f.TempDir(), "lab.img", 512<<10, 2)
	otherTorrent, otherMeta, _ := honestCache(f, filepath.Join(dir, "other"), other)
	f.Add(torrent, meta)
	f.Add(otherTorrent, meta)
	f.Add(torrent, otherMeta)
	f.Add(torrent[:len(torrent)/2], meta)
	f.Add(torrent, meta[:len(meta)-3])
	f.Add([]byte("d4:infode"), []byte(`{"source":""}`))
	f.Fuzz(func(t *testing.T, torrentBytes, metaBytes []byte) {
		cache := t.TempDir()
		if err := os.WriteFile(filepath.Join(cache, "lab.torrent"), torrentBytes, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cache, "lab.torrent.json"), metaBytes, 0o644); err != nil {
			t.Fatal(err)
		}
		c := New(Config{Dir: cache}, testlog.New(t))
		im, err := c.Load(context.Background(), Spec{Source: []string{src}})
		if err != nil {
			t.Fatalf("load with a damaged cache: %v (want the cache rebuilt)", err)
		}
		if got := im.Image.InfoHash.HexString(); got != want {
			t.Fatalf("catalog served torrent %s for the source, want its own %s", got, want)
		}
	})
}
