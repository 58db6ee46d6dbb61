// Package catalog owns the images a boot server publishes, by name, while
// it runs: loading an image (its torrent, or one made from a raw source
// and cached), checking that its sources match the torrent, and telling
// followers (the tracker's allow-list, the seeders) when an image is added
// or removed. Readers (the HTTP side) ask it at request time.
//
// It does not own what is done with an image: serving torrents and web
// seeds and signing plans (package pxe), seeding (package imager), the
// allow-list (package tracker), or tasks (pxe's store, asked through
// Config.InUse).
package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
)

// Sentinel errors callers branch on (the admin API maps them to 400, 409,
// 409 and 404).
var (
	// ErrBadImage: the image cannot be published as given (bad name or
	// path, a torrent that does not match its sources, ...).
	ErrBadImage = errors.New("bad image")
	// ErrExists: the name or the info-hash is already published.
	ErrExists = errors.New("image already published")
	// ErrInUse: an active task uses the image; see Remove.
	ErrInUse = errors.New("image in use")
	// ErrNotFound: no image of that name.
	ErrNotFound = errors.New("no such image")
)

// Config configures a Catalog. The zero value is usable: Load then needs
// a torrent for every image, and Remove asks nobody.
type Config struct {
	// Dir caches torrents made from raw sources (<state_dir>/images). A
	// cached torrent is reused while its source keeps its size and
	// modification time. Empty: an image without a torrent is refused.
	Dir string
	// WebSeed marks loaded images for the BEP 19 web seed: HTTP may serve
	// their sources.
	WebSeed bool
	// InUse, if set, names the active tasks that use an image (for
	// example "t3 (52:54:00:00:00:0a, imaging)"). Remove refuses an image
	// with users unless forced.
	InUse func(name string) ([]string, error)
}

// Image is one published image. An Image in a catalog is never changed:
// readers and followers share it.
type Image struct {
	// Name identifies the image in tasks, plans and URLs (ValidName).
	Name string
	// Image is the parsed torrent.
	Image *imager.Image
	// Torrent is the .torrent file as served; its info-hash is Image's.
	// Put encodes Image when it is empty.
	Torrent []byte
	// TorrentPath is the file Torrent was read from ("" when encoded).
	TorrentPath string
	// Source holds the image's data, one path per part in order: what the
	// seeder reads and the web seed serves. Empty: nobody here seeds it.
	Source []string
	// WebSeed lets HTTP serve Source as a BEP 19 web seed.
	WebSeed bool
	// ModTime is the torrent file's modification time (or when it was
	// encoded), for Last-Modified.
	ModTime time.Time
}

// Follower learns of every change to a catalog, in order. Both funcs run
// while the catalog holds its change lock: they must not call Put, Add or
// Remove, and they should be quick (start a seeder, not wait for one).
type Follower struct {
	// Added is called before the image becomes visible to Get. An error
	// refuses the image: the followers that took it get Removed, and Put
	// returns the error.
	Added func(*Image) error
	// Removed is called after the image stopped being visible to Get.
	Removed func(*Image)
}

// Catalog is the published images by name, safe for concurrent use.
type Catalog struct {
	cfg Config
	log *slog.Logger

	change    sync.Mutex // serialises Put, Remove, Follow and stops
	followers []*Follower

	mu      sync.RWMutex
	images  []*Image        // in the order they were added
	pending map[string]bool // names an Add is loading
}

// New returns an empty catalog. log may be nil (discard).
func New(cfg Config, log *slog.Logger) *Catalog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Catalog{cfg: cfg, log: log, pending: map[string]bool{}}
}

// Get returns the image called name.
func (c *Catalog) Get(name string) (*Image, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	i := c.index(name)
	if i < 0 {
		return nil, false
	}
	return c.images[i], true
}

// List returns the images in the order they were added.
func (c *Catalog) List() []*Image {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.images)
}

// Names returns the images' names, sorted.
func (c *Catalog) Names() []string {
	var names []string
	for _, im := range c.List() {
		names = append(names, im.Name)
	}
	slices.Sort(names)
	return names
}

func (c *Catalog) index(name string) int {
	return slices.IndexFunc(c.images, func(im *Image) bool { return im.Name == name })
}

// Put publishes an image that is already loaded (Load), after every
// follower took it. It refuses a bad name, an image without a parsed
// torrent, torrent bytes of another info-hash, a source count that is not
// one per part, and a name or info-hash already published (ErrExists: one
// info-hash has one name, so removing it unpublishes nothing another name
// still needs). Put fills in Torrent and ModTime when they are empty.
func (c *Catalog) Put(im *Image) error {
	if err := complete(im); err != nil {
		return err
	}
	c.change.Lock()
	defer c.change.Unlock()
	if err := c.free(im); err != nil {
		return err
	}
	for i, f := range c.followers {
		if err := f.Added(im); err != nil {
			for j := i - 1; j >= 0; j-- {
				c.followers[j].Removed(im)
			}
			return fmt.Errorf("image %s not published: %w", im.Name, err)
		}
	}
	c.mu.Lock()
	c.images = append(c.images, im)
	c.mu.Unlock()
	c.log.Info("catalog: image published", "image", im.Name, "info_hash", im.Image.InfoHash.HexString(), "source", im.Source)
	return nil
}

// complete checks an image for Put and fills in its torrent bytes.
func complete(im *Image) error {
	if !ValidName(im.Name) {
		return fmt.Errorf("%w: %s", ErrBadImage, nameRule(im.Name))
	}
	if im.Image == nil {
		return fmt.Errorf("%w: image %s: no parsed image: load its torrent with imager.LoadFile", ErrBadImage, im.Name)
	}
	if n := len(im.Source); n != 0 && n != len(im.Image.Files) {
		return fmt.Errorf("%w: image %s: %d sources for %d torrent files: give one per file, in order", ErrBadImage, im.Name, n, len(im.Image.Files))
	}
	if len(im.Torrent) == 0 {
		var b bytes.Buffer
		if err := im.Image.Write(&b); err != nil {
			return fmt.Errorf("image %s: encode torrent: %w", im.Name, err)
		}
		im.Torrent = b.Bytes()
	} else if parsed, err := imager.Parse(im.Torrent); err != nil {
		return fmt.Errorf("%w: image %s: %w", ErrBadImage, im.Name, err)
	} else if parsed.InfoHash != im.Image.InfoHash {
		return fmt.Errorf("%w: torrent %s has info-hash %s, the image %s: point both at the same torrent", ErrBadImage,
			im.TorrentPath, parsed.InfoHash.HexString(), im.Image.InfoHash.HexString())
	}
	if im.ModTime.IsZero() {
		im.ModTime = time.Now()
	}
	return nil
}

// free reports ErrExists if im's name or info-hash is published.
func (c *Catalog) free(im *Image) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, old := range c.images {
		switch {
		case old.Name == im.Name:
			return fmt.Errorf("%w: an image called %s is published already: pick another name, or remove it first (DELETE /api/images/%s)", ErrExists, im.Name, im.Name)
		case old.Image.InfoHash == im.Image.InfoHash:
			return fmt.Errorf("%w: image %s publishes the same torrent (info-hash %s): use that name", ErrExists, old.Name, im.Image.InfoHash.HexString())
		}
	}
	return nil
}

// Remove unpublishes the image called name: Get stops finding it at once,
// then every follower learns of it (in the reverse order of Follow). If
// Config.InUse names active tasks that use it, Remove refuses with
// ErrInUse unless force is set; a forced removal leaves those tasks as
// they are, and their plans fail because the image is not published.
func (c *Catalog) Remove(name string, force bool) (*Image, error) {
	c.change.Lock()
	defer c.change.Unlock()
	im, ok := c.Get(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not published: see GET /api/images", ErrNotFound, name)
	}
	if c.cfg.InUse != nil {
		users, err := c.cfg.InUse(name)
		if err != nil {
			return nil, fmt.Errorf("image %s: looking for tasks that use it: %w", name, err)
		}
		if len(users) > 0 && !force {
			return nil, fmt.Errorf("%w: image %s is used by active task(s) %s: cancel them (POST /api/tasks/{id}/cancel) or wait until they finish, then remove it again; or force it (DELETE /api/images/%s?force=true) and those tasks fail",
				ErrInUse, name, joinShort(users), name)
		}
		if len(users) > 0 {
			c.log.Warn("catalog: image removed by force while tasks use it; their plans will fail", "image", name, "tasks", users)
		}
	}
	c.mu.Lock()
	c.images = slices.DeleteFunc(c.images, func(old *Image) bool { return old == im })
	c.mu.Unlock()
	for i := len(c.followers) - 1; i >= 0; i-- {
		c.followers[i].Removed(im)
	}
	c.log.Info("catalog: image removed", "image", name, "info_hash", im.Image.InfoHash.HexString())
	return im, nil
}

// joinShort lists at most 5 items, then how many more.
func joinShort(items []string) string {
	const most = 5
	if len(items) <= most {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:most], ", "), len(items)-most)
}

// Follow adds a follower. It first gets Added for every published image,
// in the order they were added; if one fails, the images it took are
// Removed from it again and Follow returns the error (a follower's error
// names the image). stop ends the
// following; it waits for a change in progress and calls nothing itself.
func (c *Catalog) Follow(f Follower) (stop func(), err error) {
	c.change.Lock()
	defer c.change.Unlock()
	images := c.List()
	for i, im := range images {
		if err := f.Added(im); err != nil {
			for j := i - 1; j >= 0; j-- {
				f.Removed(images[j])
			}
			return nil, err
		}
	}
	fp := &f
	c.followers = append(c.followers, fp)
	return func() {
		c.change.Lock()
		defer c.change.Unlock()
		c.followers = slices.DeleteFunc(c.followers, func(g *Follower) bool { return g == fp })
	}, nil
}
