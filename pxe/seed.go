package pxe

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
)

// SeedConfig runs a trusted seeder (imager.ModeSeed: the sources are not
// read back first) for every image of a catalog that has sources, and
// follows the catalog: an image's seeder starts when the image is added
// and stops when it is removed.
type SeedConfig struct {
	// Catalog to follow. Required.
	Catalog *catalog.Catalog
	// Port is the first peer port. Each image seeds on the lowest port
	// from Port up that no other seeder of this service holds: the images
	// in the catalog at Start get Port, Port+1, … in catalog order, an
	// image added later the lowest free one (a removed image's port is
	// reused). Seeders listen on every address.
	Port int
	// UploadLimit caps each seeder's upload in bytes per second; 0: none.
	UploadLimit int64
	// Trackers are the announce URLs (empty: the torrent's).
	Trackers []string
	// OnPort, if set, is told each image's peer port when its seeder
	// starts, and port 0 when it stops (plans carry the address:
	// HTTPConfig.Seeders). It is called under the service's lock: keep it
	// quick.
	OnPort func(image string, port int)
}

// Start seeds until ctx is done, then stops every seeder and returns nil.
// A seeder that cannot start for an image in the catalog at the start (a
// port taken, a source gone) ends Start with the error; for an image added
// later, the catalog refuses the image with it (nothing is published).
func (c SeedConfig) Start(ctx context.Context, log *slog.Logger) error {
	sd := &seeders{cfg: c, log: log, ctx: ctx, running: map[string]*seeder{}}
	stop, err := c.Catalog.Follow(catalog.Follower{Added: sd.start, Removed: sd.stop})
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	sd.stopAll()
	return nil
}

// seeders are the running seed sessions by image name.
type seeders struct {
	cfg SeedConfig
	log *slog.Logger
	ctx context.Context

	mu      sync.Mutex
	running map[string]*seeder
}

type seeder struct {
	port int
	sess *imager.Session
	log  *slog.Logger
}

// start joins the swarm as im's seeder; it returns once the seeder
// listens.
func (sd *seeders) start(im *catalog.Image) error {
	if len(im.Source) == 0 {
		sd.log.Info("seed: the image has no sources on this host; not seeding it", "image", im.Name)
		return nil
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	port := sd.freePort()
	if port > 65535 {
		return fmt.Errorf("seed %s: no peer port left from %d up: remove an image or lower seed.port", im.Name, sd.cfg.Port)
	}
	cfg := imager.Config{Image: im.Image, Paths: im.Source, Mode: imager.ModeSeed,
		Listen: fmt.Sprintf(":%d", port), Trackers: sd.cfg.Trackers}
	cfg.Tuning.UploadLimit = sd.cfg.UploadLimit
	log := sd.log.With("image", im.Name)
	sess, err := cfg.Join(sd.ctx, log)
	if err != nil {
		return fmt.Errorf("seed %s: %w", im.Name, err)
	}
	sd.running[im.Name] = &seeder{port: port, sess: sess, log: log}
	if sd.cfg.OnPort != nil {
		sd.cfg.OnPort(im.Name, port)
	}
	log.Info("seed: started", "port", port)
	return nil
}

// freePort is the lowest port from cfg.Port up that no seeder holds.
func (sd *seeders) freePort() int {
	held := map[int]bool{}
	for _, s := range sd.running {
		held[s.port] = true
	}
	port := sd.cfg.Port
	for held[port] {
		port++
	}
	return port
}

// stop closes im's seeder; its port is free when stop returns.
func (sd *seeders) stop(im *catalog.Image) {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if s := sd.running[im.Name]; s != nil {
		s.close()
		delete(sd.running, im.Name)
		if sd.cfg.OnPort != nil {
			sd.cfg.OnPort(im.Name, 0)
		}
	}
}

func (sd *seeders) stopAll() {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range sd.running {
		wg.Go(s.close)
	}
	wg.Wait()
	clear(sd.running)
}

func (s *seeder) close() {
	err := s.sess.Close()
	s.log.Info("seed stopped", "uploaded_bytes", s.sess.Progress().Uploaded, "err", err)
}
