package pxe

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/fstest"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
)

// TestWebSeedUsedBlocks: the image host's web seed serves a used-block
// image's torrent file (the used extents of its source, packed): a
// ranged request across an extent boundary gets the packed bytes, and
// anacrolix, with the web seed as its only peer, writes the image onto a
// target that holds random bytes; the FAT filesystem there checks clean
// and every file reads back. The catalog made the torrent from the raw
// source, as `pxeswarm serve` does.
func TestWebSeedUsedBlocks(t *testing.T) {
	const size = 32 << 20
	src := fstest.RandomFile(t, "lab.img", size, 1)
	v := fstest.MakeFAT(t, src, fstest.NewFiles(t, 16, 600<<10), "-F", "16")
	log := testlog.New(t)
	cat := catalog.New(catalog.Config{Dir: t.TempDir(), WebSeed: true}, log)
	si, err := cat.Load(context.Background(), catalog.Spec{Source: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.Put(si); err != nil {
		t.Fatal(err)
	}
	file := si.Image.Files[0]
	if len(file.Part.Extents) < 2 || file.Part.Filesystem != "fat16" {
		t.Fatalf("catalog made %s with %d extents, want a used-block fat16 torrent", file.Part.Filesystem, len(file.Part.Extents))
	}
	base := serveLocal(t, newFixture(t, func(c *HTTPConfig) { c.Catalog = cat }).cfg)
	resp, err := http.Get(base + "/torrents/lab.torrent")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	im, err := imager.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}

	// The packed bytes across the first extent boundary.
	sf := fstest.Open(t, src)
	from := file.Part.Extents[0].Len - 100
	want := make([]byte, 200)
	copy(want[:100], readAt(t, sf, file.Part.Extents[0].End()-100, 100))
	copy(want[100:], readAt(t, sf, file.Part.Extents[1].Off, 100))
	req, _ := http.NewRequest("GET", base+"/images/lab/lab/"+file.Path, nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, from+199))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(got, want) {
		t.Errorf("web seed Range %d-%d (across the first extent's end) = %d, %d bytes; want 206 and the packed bytes", from, from+199, resp.StatusCode, len(got))
	}

	target := fstest.RandomFile(t, "target.img", size, 99)
	icfg := imager.Config{Listen: "127.0.0.1:0", ProgressEvery: 200 * time.Millisecond}
	icfg.Image, icfg.Paths, icfg.Mode = im, []string{target}, imager.ModeFresh
	sess, err := icfg.Join(context.Background(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer wcancel()
	if err := sess.Wait(wctx); err != nil {
		t.Fatalf("download through the web seed: %v (progress %+v)", err, sess.Progress())
	}
	sess.Close()
	v.Check(t, target)
}

func readAt(t *testing.T, f *os.File, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}
