package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/testlog"
)

// writeRandom writes size random bytes (from seed) to dir/name.
func writeRandom(t testing.TB, dir, name string, size int, seed uint64) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// torrentOf makes dir/name.torrent from sources.
func torrentOf(t *testing.T, dir, name string, sources ...string) string {
	t.Helper()
	im, err := imager.Create(context.Background(), slog.New(slog.DiscardHandler),
		imager.CreateConfig{Name: name, Sources: sources, PieceLength: imager.MinPieceLength})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".torrent")
	if err := im.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// events records what a follower was told, as "+name" and "-name".
type events struct {
	mu     sync.Mutex
	got    []string
	refuse map[string]string // follower tag → the name its Added refuses
}

func (e *events) follower(tag string) Follower {
	return Follower{
		Added: func(im *Image) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			if im.Name == e.refuse[tag] {
				return fmt.Errorf("%s refuses %s", tag, im.Name)
			}
			e.got = append(e.got, tag+"+"+im.Name)
			return nil
		},
		Removed: func(im *Image) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.got = append(e.got, tag+"-"+im.Name)
		},
	}
}

func (e *events) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	got := e.got
	e.got = nil
	return got
}

func TestAddGetRemove(t *testing.T) {
	dir := t.TempDir()
	lab := writeRandom(t, dir, "lab-2026.img", 700<<10, 1)
	p1 := writeRandom(t, dir, "p1.img", 300<<10, 2)
	p2 := writeRandom(t, dir, "p2.img", 500<<10+3, 3)
	two := torrentOf(t, dir, "two", p1, p2)
	cache := filepath.Join(t.TempDir(), "images")
	c := New(Config{Dir: cache, WebSeed: true}, testlog.New(t))
	var ev events
	if _, err := c.Follow(ev.follower("f")); err != nil {
		t.Fatal(err)
	}

	// A raw source: named after its file, torrent made and cached.
	im, err := c.Add(context.Background(), Spec{Source: []string{lab}})
	if err != nil {
		t.Fatalf("Add(raw source) = %v", err)
	}
	if im.Name != "lab-2026" || im.TorrentPath != filepath.Join(cache, "lab-2026.torrent") || !im.WebSeed || im.Image.Length != 700<<10 {
		t.Errorf("Add(raw source) = %+v", im)
	}
	if raw, _ := os.ReadFile(im.TorrentPath); !bytes.Equal(raw, im.Torrent) {
		t.Errorf("Torrent is not the cached file's bytes")
	}
	// A torrent with two parts: named after the torrent.
	im2, err := c.Add(context.Background(), Spec{Torrent: two, Source: []string{p1, p2}})
	if err != nil || im2.Name != "two" {
		t.Fatalf("Add(torrent, 2 sources) = %+v, %v", im2, err)
	}
	if got, ok := c.Get("two"); !ok || got != im2 {
		t.Errorf("Get(two) = %v, %v, want the added image", got, ok)
	}
	if _, ok := c.Get("nope"); ok {
		t.Error("Get(nope) found something")
	}
	if d := cmp.Diff([]string{"lab-2026", "two"}, c.Names()); d != "" {
		t.Errorf("Names() (-want +got):\n%s", d)
	}
	if l := c.List(); len(l) != 2 || l[0] != im || l[1] != im2 {
		t.Errorf("List() = %v, want the images in the order added", l)
	}

	if got, err := c.Remove("lab-2026", false); err != nil || got != im {
		t.Fatalf("Remove(lab-2026) = %v, %v", got, err)
	}
	if _, ok := c.Get("lab-2026"); ok {
		t.Error("Get after Remove found the image")
	}
	if _, err := c.Remove("lab-2026", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}
	if d := cmp.Diff([]string{"f+lab-2026", "f+two", "f-lab-2026"}, ev.take()); d != "" {
		t.Errorf("follower saw (-want +got):\n%s", d)
	}
	// Added again: the cached torrent is reused, same info-hash.
	again, err := c.Add(context.Background(), Spec{Source: []string{lab}})
	if err != nil || again.Image.InfoHash != im.Image.InfoHash {
		t.Errorf("Add again = %v, %v, want the same info-hash from the cache", again, err)
	}
}

func TestAddRefuses(t *testing.T) {
	dir := t.TempDir()
	p1 := writeRandom(t, dir, "p1.img", 600<<10, 1)
	p2 := writeRandom(t, dir, "p2.img", 300<<10, 2)
	twin := writeRandom(t, dir, "twin.img", 600<<10, 3) // p1's size, other bytes
	lastByte, _ := os.ReadFile(p1)
	lastByte[len(lastByte)-1] ^= 1
	tail := filepath.Join(dir, "tail.img")
	os.WriteFile(tail, lastByte, 0o644)
	one := torrentOf(t, dir, "one", p1)
	two := torrentOf(t, dir, "two", p1, p2)
	junk := filepath.Join(dir, "junk.torrent")
	os.WriteFile(junk, []byte("d4:infoi3ee"), 0o644)
	withDir := New(Config{Dir: t.TempDir()}, testlog.New(t))
	noDir := New(Config{}, testlog.New(t))
	tests := []struct {
		name string
		c    *Catalog
		spec Spec
		want string
	}{
		{"no source", withDir, Spec{Name: "x", Torrent: one}, "list its source"},
		{"multi-part without torrent", withDir, Spec{Name: "x", Source: []string{p1, p2}}, "a torrent is needed"},
		{"bad name", withDir, Spec{Name: "../x", Torrent: one, Source: []string{p1}}, "names may hold only"},
		{"bad name from file", withDir, Spec{Source: []string{filepath.Join(dir, "a b.img")}}, "names may hold only"},
		{"missing source", withDir, Spec{Name: "x", Torrent: one, Source: []string{filepath.Join(dir, "none.img")}}, "no such file"},
		{"source is a folder", withDir, Spec{Name: "x", Torrent: one, Source: []string{dir}}, "not a file or a block device"},
		{"missing torrent", withDir, Spec{Name: "x", Torrent: filepath.Join(dir, "none.torrent"), Source: []string{p1}}, "no such file"},
		{"torrent is a folder", withDir, Spec{Name: "x", Torrent: dir, Source: []string{p1}}, "not a torrent file"},
		{"not a torrent", withDir, Spec{Name: "x", Torrent: junk, Source: []string{p1}}, "bad image torrent"},
		{"parts count", withDir, Spec{Name: "x", Torrent: two, Source: []string{p1}}, "the torrent has 2 parts but source lists 1 files"},
		{"source size", withDir, Spec{Name: "x", Torrent: one, Source: []string{p2}}, "is this the right source"},
		{"source swapped", withDir, Spec{Name: "x", Torrent: two, Source: []string{p2, p1}}, "is this the right source"},
		{"same size, other bytes", withDir, Spec{Name: "x", Torrent: one, Source: []string{twin}}, "differs from the torrent"},
		{"last byte differs", withDir, Spec{Name: "x", Torrent: one, Source: []string{tail}}, "differs from the torrent"},
		{"piece length", withDir, Spec{Name: "x", Source: []string{p1}, PieceLength: 3 << 20}, "piece length"},
		{"no cache folder", noDir, Spec{Source: []string{p1}}, "no torrent given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev events
			if _, err := tt.c.Follow(ev.follower("f")); err != nil {
				t.Fatal(err)
			}
			im, err := tt.c.Add(context.Background(), tt.spec)
			if !errors.Is(err, ErrBadImage) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Add(%+v) = %v, want ErrBadImage mentioning %q", tt.spec, err, tt.want)
			}
			if im != nil || len(tt.c.List()) != 0 || len(ev.take()) != 0 {
				t.Errorf("after a refused Add: image %v, catalog %v: want nothing published", im, tt.c.List())
			}
		})
	}
	if _, err := withDir.Add(context.Background(), Spec{Torrent: two, Source: []string{p1, p2}}); err != nil {
		t.Errorf("after the refusals, a good Add = %v", err)
	}
}

func TestDuplicates(t *testing.T) {
	dir := t.TempDir()
	a := writeRandom(t, dir, "a.img", 300<<10, 1)
	b := writeRandom(t, dir, "b.img", 300<<10, 2)
	ta := torrentOf(t, dir, "a", a)
	c := New(Config{Dir: t.TempDir()}, testlog.New(t))
	ctx := context.Background()
	if _, err := c.Add(ctx, Spec{Name: "room", Torrent: ta, Source: []string{a}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		spec Spec
		want string
	}{
		{"same name", Spec{Name: "room", Source: []string{b}}, "called room"},
		{"same torrent, other name", Spec{Name: "room2", Torrent: ta, Source: []string{a}}, "image room publishes the same torrent"},
		{"same name from the torrent", Spec{Name: "", Torrent: torrentOf(t, dir, "room", b), Source: []string{b}}, "called room"},
	} {
		if _, err := c.Add(ctx, tt.spec); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Add = %v, want ErrExists mentioning %q", tt.name, err, tt.want)
		}
	}
	if d := cmp.Diff([]string{"room"}, c.Names()); d != "" {
		t.Errorf("Names() after duplicates (-want +got):\n%s", d)
	}
	// Concurrent adds of one name: one wins, the other is told at once.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { _, errs[i] = c.Add(ctx, Spec{Name: "race", Source: []string{b}}) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrExists):
			t.Errorf("concurrent Add = %v, want nil or ErrExists", err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent Adds of one name succeeded, want 1", won)
	}
}

func TestPut(t *testing.T) {
	dir := t.TempDir()
	a := writeRandom(t, dir, "a.img", 300<<10, 1)
	b := writeRandom(t, dir, "b.img", 300<<10, 2)
	imA, err := imager.LoadFile(torrentOf(t, dir, "a", a))
	if err != nil {
		t.Fatal(err)
	}
	rawB, _ := os.ReadFile(torrentOf(t, dir, "b", b))
	c := New(Config{}, nil)
	for _, tt := range []struct {
		name string
		im   *Image
		want string
	}{
		{"bad name", &Image{Name: "a/b", Image: imA}, "names may hold only"},
		{"no image", &Image{Name: "a"}, "no parsed image"},
		{"source count", &Image{Name: "a", Image: imA, Source: []string{a, a}}, "one per file"},
		{"other torrent", &Image{Name: "a", Image: imA, Torrent: rawB}, "info-hash"},
		{"junk torrent", &Image{Name: "a", Image: imA, Torrent: []byte("junk")}, "bad image torrent"},
	} {
		if err := c.Put(tt.im); !errors.Is(err, ErrBadImage) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Put = %v, want ErrBadImage mentioning %q", tt.name, err, tt.want)
		}
	}
	im := &Image{Name: "a", Image: imA}
	if err := c.Put(im); err != nil {
		t.Fatal(err)
	}
	if parsed, err := imager.Parse(im.Torrent); err != nil || parsed.InfoHash != imA.InfoHash || im.ModTime.IsZero() {
		t.Errorf("Put did not fill in the torrent bytes and time: %v", err)
	}
}

func TestFollowers(t *testing.T) {
	dir := t.TempDir()
	c := New(Config{Dir: t.TempDir()}, testlog.New(t))
	ctx := context.Background()
	add := func(name string) error {
		_, err := c.Add(ctx, Spec{Name: name, Source: []string{writeRandom(t, dir, name+".img", 300<<10, uint64(len(name)))}})
		return err
	}
	if err := add("a"); err != nil {
		t.Fatal(err)
	}
	var ev events
	// A follower first learns what is published.
	stopF, err := c.Follow(ev.follower("f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Follow(ev.follower("g")); err != nil {
		t.Fatal(err)
	}
	if err := add("bb"); err != nil {
		t.Fatal(err)
	}
	// A refusal by the second follower: the first gets it removed again,
	// and the image is not published.
	ev.mu.Lock()
	ev.refuse = map[string]string{"g": "ccc"}
	ev.mu.Unlock()
	if err := add("ccc"); err == nil || !strings.Contains(err.Error(), "g refuses ccc") {
		t.Errorf("Add refused by a follower = %v, want its error", err)
	}
	if _, ok := c.Get("ccc"); ok {
		t.Error("an image a follower refused is published")
	}
	// Removal: Get stops finding it first, then followers in reverse.
	if _, err := c.Remove("a", false); err != nil {
		t.Fatal(err)
	}
	want := []string{"f+a", "g+a", "f+bb", "g+bb", "f+ccc", "f-ccc", "g-a", "f-a"}
	if d := cmp.Diff(want, ev.take()); d != "" {
		t.Errorf("followers saw (-want +got):\n%s", d)
	}
	// A follower that refuses an image already published cannot follow.
	var picky events
	picky.refuse = map[string]string{"p": "bb"}
	if _, err := c.Follow(picky.follower("p")); err == nil {
		t.Error("Follow by a follower that refuses a published image = nil, want its error")
	}
	stopF()
	if _, err := c.Remove("bb", false); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"g-bb"}, ev.take()); d != "" {
		t.Errorf("after stop (-want +got):\n%s", d)
	}
}

func TestRemoveInUse(t *testing.T) {
	dir := t.TempDir()
	users := []string{"t1 (52:54:00:00:00:0a, imaging)"}
	c := New(Config{Dir: t.TempDir(), InUse: func(name string) ([]string, error) {
		if name == "busy" {
			return users, nil
		}
		return nil, nil
	}}, testlog.New(t))
	for _, name := range []string{"busy", "idle"} {
		if _, err := c.Add(context.Background(), Spec{Name: name, Source: []string{writeRandom(t, dir, name, 300<<10, uint64(len(name)))}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Remove("busy", false)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), users[0]) || !strings.Contains(err.Error(), "cancel them") {
		t.Errorf("Remove(busy) = %v, want ErrInUse naming the task and what to do", err)
	}
	if _, ok := c.Get("busy"); !ok {
		t.Error("a refused Remove removed the image")
	}
	if _, err := c.Remove("idle", false); err != nil {
		t.Errorf("Remove(idle) = %v", err)
	}
	if _, err := c.Remove("busy", true); err != nil {
		t.Errorf("Remove(busy, force) = %v", err)
	}
	if n := len(c.List()); n != 0 {
		t.Errorf("%d images left, want 0", n)
	}
}

func TestValidName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"lab-2026", true}, {"Win11_24H2.v2", true}, {"a", true}, {strings.Repeat("x", 128), true},
		{"", false}, {".hidden", false}, {"..", false}, {"a/b", false}, {"a b", false}, {"ä", false},
		{"a%2fb", false}, {strings.Repeat("x", 129), false}, {"a\x00", false},
	} {
		if got := ValidName(tt.name); got != tt.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}
