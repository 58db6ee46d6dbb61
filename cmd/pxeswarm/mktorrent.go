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
1,204 extents"), and machines write those blocks and leave the rest. A
hibernated Windows volume (Fast Startup), one not shut down cleanly, or a
BitLocker volume is refused with what to do; --raw ships every byte as it
is.

Any other source (a filesystem pxeswarm does not read, or none) is never
guessed at: while hashing, mktorrent looks for runs of all-zero 4KiB blocks
of 1MiB and more, and leaves them out ("unknown filesystem: 12.3MiB
non-zero of 1GiB, 14 extents; zero runs are zeroed on targets"): machines
write the rest and zero the runs, so a partition zero-filled before its
capture ships what was written since. Holes of a sparse image file are not
even read. It is one read of the source, as for plain hashing. When the
runs hold under 1/32 of the source, it ships whole, byte for byte.

--sparse, after writing the torrent, punches holes in the gaps of each
source file (the free space of a known filesystem, the zero runs of any
other), so the image host's file costs about what is used, and prints its
allocated bytes before and after. Seeders read only the used bytes, so the
holes never matter to them. It changes the bytes in a filesystem's free
space (they read zeros afterwards): the filesystem and this torrent are
unaffected, but a --raw torrent of the file made later differs from one
made before. It trusts the filesystem's bitmaps as used-block images do,
now for the image host's own copy: keep another if this file is the only
one. It refuses block devices, and --raw (no gaps to punch).

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
	raw := fs.Bool("raw", false, "ship every byte of every source, used or not (the default ships only what a known filesystem uses, and leaves out long zero runs of any other)")
	sparse := fs.Bool("sparse", false, "after hashing, punch holes in the unused ranges of each source file, so it costs the store about what is used (regular files only; changes the bytes of a filesystem's free space)")
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
	if *sparse {
		if *raw {
			return fmt.Errorf("%w: --sparse punches the unused ranges of a used-block image, and --raw has none: leave out one of them", errUsage)
		}
		for _, src := range fs.Args() {
			if err := imager.CheckSparse(src); err != nil {
				return err
			}
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
		if f.Part.Gaps == imager.GapsZero {
			fmt.Printf("part %s: %s\n", f.Path, imager.ZeroSummary(f.Length, f.Part.Size, len(f.Part.Extents)))
		} else if fsys := f.Part.Filesystem; fsys != "" {
			fmt.Printf("part %s: %s, %s used of %s in %d extents: only those are shipped\n", f.Path, fsys,
				bytesize.Format(f.Length), bytesize.Format(f.Part.Size), len(f.Part.Extents))
		}
	}
	fmt.Printf("wrote %s: %s, infohash %s, %d pieces of %s, parts %s\n", *out, bytesize.Format(im.Length),
		im.InfoHash.HexString(), im.NumPieces(), bytesize.Format(im.PieceLength), strings.Join(files, " "))
	if *sparse {
		for i, src := range fs.Args() {
			f := im.Files[i]
			if len(f.Part.Extents) == 0 {
				fmt.Printf("sparse: %s: no unused ranges (shipped whole): left as it is\n", src)
				continue
			}
			p, err := imager.PunchGaps(src, f)
			if err != nil {
				return fmt.Errorf("sparse: %w (the torrent is written and matches the file either way)", err)
			}
			fmt.Printf("sparse: %s\n", p)
		}
	}
	return nil
}
