package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
)

func runMktorrent(ctx context.Context, args []string) error {
	fs := newFlagSet("mktorrent", "[flags] -o X.torrent SOURCE...", `
Hash one or more partition images into an image torrent. A SOURCE is a
regular file, a whole block device (/dev/sdb) or a partition (/dev/sdb2).
Several sources make one torrent with one file per partition, in order; the
torrent records which partition each file goes to, so a machine's whole
layout is one swarm. Hashing runs on every core.

A source whose filesystem pxeswarm reads (ext2/3/4, FAT12/16/32, NTFS, swap)
ships only the blocks the filesystem uses, as Clonezilla does: mktorrent
reads its bitmaps and says what it found ("ext4: 38.2GiB used of 256GiB,
1,204 extents"), and machines write those blocks and leave the rest. Any
other source ships whole. A hibernated Windows volume (Fast Startup), one
not shut down cleanly, or a BitLocker volume is refused with what to do;
--raw ships every byte as it is.

Example:
  pxeswarm mktorrent --tracker http://198.18.0.1:8080/announce -o win11.torrent esp.img windows.img`)
	fs.section("torrent")
	out := fs.String("o", "", "write the torrent to this file (required)")
	name := fs.String("name", "", "image name (default: the first source's file name)")
	var piece bytesFlag
	fs.Var(&piece, "piece-size", "piece size, a power of two from 256KiB to 64MiB (default: by image size, about 2048 pieces from 256KiB up to 8MiB at 16GiB and more)")
	var trackers, webseeds listFlag
	fs.Var(&trackers, "tracker", "announce URL; repeat for fallbacks")
	fs.Var(&webseeds, "webseed", "BEP 19 HTTP URL that serves the same files; repeatable")
	table := enumFlag{val: "", allowed: []string{"", "gpt", "mbr"}}
	fs.Var(&table, "table", "partition table the sources came from: gpt, mbr, or empty")
	raw := fs.Bool("raw", false, "ship every byte of every source, used or not (the default ships only what a known filesystem uses)")
	fs.logFlags()
	if err := fs.parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: need -o X.torrent and at least one SOURCE", errUsage)
	}
	if piece != 0 {
		if err := imager.CheckPieceLength(int64(piece)); err != nil {
			return err
		}
	}
	log := fs.logger()
	pp := newProgressPrinter("mktorrent", *fs.progress)
	im, err := imager.Create(ctx, log, imager.CreateConfig{
		Name: *name, Sources: fs.Args(), PieceLength: int64(piece), Table: table.val,
		Trackers: trackers, WebSeeds: webseeds, Progress: pp.show, Raw: *raw,
	})
	pp.done()
	if err != nil {
		return err
	}
	if err := im.WriteFile(*out); err != nil {
		return err
	}
	var files []string
	for _, f := range im.Files {
		files = append(files, fmt.Sprintf("%s→p%d", f.Path, f.Part.Number))
		if fsys := f.Part.Filesystem; fsys != "" {
			fmt.Printf("part %s: %s, %s used of %s in %d extents: only those are shipped\n", f.Path, fsys,
				bytesize.Format(f.Length), bytesize.Format(f.Part.Size), len(f.Part.Extents))
		}
	}
	fmt.Printf("wrote %s: %s, infohash %s, %d pieces of %s, parts %s\n", *out, bytesize.Format(im.Length),
		im.InfoHash.HexString(), im.NumPieces(), bytesize.Format(im.PieceLength), strings.Join(files, " "))
	return nil
}
