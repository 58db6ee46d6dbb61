package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/tracker"
)

func runSeed(ctx context.Context, args []string) error {
	fs := newFlagSet("seed", "--torrent X.torrent --source PATH... [flags]", `
Seed an image from trusted sources. The sources are not read back at start
(trusted seed): every piece is served as is, and every leecher verifies what
it receives. With --tracker-listen the same process also runs the LAN
tracker, with this image published on it.

Example:
  pxeswarm seed --torrent win11.torrent --source esp.img,windows.img --tracker-listen :8080`)
	fs.section("seed")
	torrentPath := fs.String("torrent", "", "image torrent file or http(s) URL (required)")
	var sources, trackers listFlag
	fs.Var(&sources, "source", "source file or device per image part, in order; repeat or separate by commas (required)")
	listen := fs.String("listen", ":6881", "address for peer connections")
	fs.Var(&trackers, "tracker", "announce URL to use instead of the torrent's")
	fs.section("tracker")
	trackerListen := fs.String("tracker-listen", "", "also run the tracker on this address, e.g. :8080")
	interval := fs.Duration("interval", tracker.DefaultInterval, "announce interval told to peers")
	fs.note("interval")
	fs.logFlags()
	if err := fs.parse(args); err != nil {
		return err
	}
	if *torrentPath == "" || len(sources) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: need --torrent and --source", errUsage)
	}
	log := fs.logger()
	im, err := imager.Open(ctx, *torrentPath)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	if *trackerListen != "" {
		tr, err := tracker.New(tracker.Config{Interval: *interval}, log.With("service", "tracker"))
		if err != nil {
			return err
		}
		tr.Publish(im.InfoHash, im.Name)
		ln, err := net.Listen("tcp", *trackerListen)
		if err != nil {
			return fmt.Errorf("tracker: listen on %s: is the port free? %w", *trackerListen, err)
		}
		log.Info("tracker listening", "addr", ln.Addr().String(), "announce", announceURL(ln.Addr()))
		g.Go(func() error { return tr.Serve(ctx, ln) })
		if len(trackers) == 0 && len(im.Meta.UpvertedAnnounceList().DistinctValues()) == 0 {
			trackers = listFlag{announceURL(ln.Addr())}
		}
	}
	pp := newProgressPrinter("seed", *fs.progress)
	cfg := imager.Config{Image: im, Paths: sources, Mode: imager.ModeSeed, Listen: *listen,
		Trackers: trackers, Progress: pp.show, ProgressEvery: 2 * time.Second}
	g.Go(func() error {
		p, err := cfg.Run(ctx, log, -1)
		pp.done()
		log.Info("seed stopped", "uploaded_bytes", p.Uploaded, "uploaded", bytesize.Format(p.Uploaded))
		return err
	})
	return g.Wait()
}

// announceURL is the tracker's announce URL as a local peer reaches it.
func announceURL(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.IP.IsUnspecified() {
		return fmt.Sprintf("http://127.0.0.1:%d/announce", portOf(a))
	}
	return "http://" + ta.String() + "/announce"
}

func portOf(a net.Addr) int {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.Port
	}
	return 0
}
