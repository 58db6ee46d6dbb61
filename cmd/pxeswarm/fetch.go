package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

func runFetch(ctx context.Context, args []string) error {
	fs := newFlagSet("fetch", "--torrent FILE|URL --target PATH... [flags]", `
Fetch an image from the swarm and write it straight onto its targets: one
block device, partition or file per image part, in order. Every received
piece is verified; nothing is staged in a temporary file. Torrents from
stock tools work too: a single-file torrent's file is one target, a
multi-file torrent's files are the targets in order.

Used-block images ship only the bytes a partition uses. What lies between
them is either the filesystem's free space, which keeps whatever the target
held there, or zeros the source held, which the fetch writes (BLKZEROOUT on
a block device, punched holes in a file) before it calls the image done.
--discard also discards the free space where the target can (TRIM on an
SSD, holes in a file); a target that cannot gets one log line.

Check modes:
  fresh   the targets hold nothing of the image; they are not read first
  verify  hash what the targets hold first, fetch only the pieces that
          differ (resume after a crash, incremental re-imaging)

Example:
  pxeswarm fetch --torrent http://198.18.0.1:8080/images/win11.torrent \
      --target /dev/sda1,/dev/sda2 --check verify --seed-for 10m`)
	fs.section("fetch")
	torrentPath := fs.String("torrent", "", "image torrent file or http(s) URL (required)")
	var targets, trackers, peers, webseeds listFlag
	fs.Var(&targets, "target", "target per image part, in order; repeat or separate by commas (required)")
	check := enumFlag{val: "fresh", allowed: []string{"fresh", "verify"}}
	fs.Var(&check, "check", "check mode: fresh or verify")
	seedFor := fs.Duration("seed-for", 0, "keep seeding this long after the image is complete")
	fs.note("seed-for")
	state := fs.String("state", "", "keep piece completion in this file across runs (resume without re-reading)")
	discard := fs.Bool("discard", false, "used-block images: discard the free space between the used blocks once the image is written, where the target can (BLKDISCARD, punched holes); never the image's own bytes")
	fs.section("network")
	listen := fs.String("listen", ":0", "address for peer connections (:0 picks a free port)")
	fs.Var(&trackers, "tracker", "announce URL to use instead of the torrent's")
	fs.Var(&peers, "peer", "ip:port of a peer to connect to directly (offered again every 5s until connected); repeatable")
	fs.Var(&webseeds, "webseed", "BEP 19 HTTP URL serving the image's files, besides the torrent's url-list (URL/NAME/PATH for a multi-file torrent; the file's own URL, or a folder URL ending in / for a single-file one); repeatable")
	var chunk bytesFlag
	fs.Var(&chunk, "chunk-size", "request size (default: 64KiB for pxeswarm images, falling to 16KiB for good once a stock client such as Transmission or qBittorrent offers pieces, since they answer no larger requests; 16KiB for torrents from other tools)")
	var dlLimit, ulLimit bytesFlag
	fs.Var(&dlLimit, "download-limit", "cap download payload per second, e.g. 50MiB (0: none)")
	fs.Var(&ulLimit, "upload-limit", "cap upload payload per second (0: none)")
	fs.logFlags()
	if err := fs.parse(args); err != nil {
		return err
	}
	if *torrentPath == "" || len(targets) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: need --torrent and --target", errUsage)
	}
	if c := int64(chunk); c != 0 && (c < 4<<10 || c > 1<<20 || c&(c-1) != 0) {
		return fmt.Errorf("%w: --chunk-size %s: want a power of two from 4KiB to 1MiB, e.g. 16KiB", errUsage, bytesize.Format(c))
	}
	log := fs.logger()
	im, err := imager.Open(ctx, *torrentPath)
	if err != nil {
		return err
	}
	pp := newProgressPrinter("fetch", *fs.progress)
	cfg := imager.Config{Image: im, Paths: targets, Mode: imager.Mode(check.val), Listen: *listen,
		Trackers: trackers, Peers: peers, WebSeeds: webseeds, StateFile: *state, Discard: *discard, Progress: pp.show,
		Tuning:        imager.Tuning{ChunkSize: int(chunk), DownloadLimit: int64(dlLimit), UploadLimit: int64(ulLimit)},
		ProgressEvery: 500 * time.Millisecond}
	p, err := cfg.Run(ctx, log, *seedFor)
	pp.done()
	log.Info("fetch finished", "state", p.State, "took", p.Took, "elapsed", p.Elapsed,
		"received_bytes", p.Downloaded, "sent_bytes", p.Uploaded, "wasted_bytes", p.Wasted, "bad_pieces", p.BadPieces,
		"from_seeders_bytes", p.FromSeeders)
	if err != nil {
		return fmt.Errorf("image %s: stopped with %s of %s verified on the targets (%s): %w; run again with --check verify to keep what is there",
			im.Name, bytesize.Format(p.Done), bytesize.Format(im.Length), p.State, err)
	}
	fmt.Printf("fetch: done %s (%s) in %s, received %s (%s from image hosts, %s from other machines), sent %s\n",
		im.Name, bytesize.Format(im.Length), p.Took.Round(time.Second/10), bytesize.Format(p.Downloaded),
		bytesize.Format(p.FromSeeders), bytesize.Format(max(0, p.Downloaded-p.Wasted-p.FromSeeders)), bytesize.Format(p.Uploaded))
	return nil
}
