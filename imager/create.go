package imager

import (
	"context"
	"crypto/sha1"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/internal/version"
	"github.com/pxeswarm/pxeswarm/partition/blockdev"
	"github.com/pxeswarm/pxeswarm/usedmap"
)

// CreateConfig describes a torrent to build from partition images.
type CreateConfig struct {
	// Name of the image, shown everywhere; defaults to the first source's
	// file name.
	Name string
	// Sources are regular files, whole block devices or partitions, one per
	// torrent file, in target order.
	Sources []string
	// Parts optionally overrides the layout entry of each source (same
	// order). Zero fields are filled in from the source: Size from its
	// length, Number from its kernel partition number or its position.
	Parts []PartInfo
	// Table is the partition table kind the layout describes ("gpt",
	// "mbr" or "").
	Table string
	// PieceLength in bytes; a power of two from 256 KiB to 64 MiB.
	// 0 means PieceLengthFor the sources' total size.
	PieceLength int64
	// Trackers are announce URLs, in order of preference.
	Trackers []string
	// WebSeeds are BEP 19 HTTP URLs serving the same files.
	WebSeeds []string
	// Raw ships every byte of every source. Without it, a source whose
	// filesystem usedmap reads (ext2/3/4, FAT, NTFS, swap) ships only the
	// bytes the filesystem uses (a used-block part, see OnExtents, with
	// GapsFree), and any other source ships without its runs of zeros of
	// MinZeroRun and more (zero detection, zeros.go, with GapsZero), or
	// whole when they hold under 1/32 of it.
	Raw bool
	// Workers hashing in parallel; 0 means one per CPU.
	Workers int
	// Progress, if set, is called about twice a second while hashing;
	// its Total is the bytes to read (zero runs included).
	Progress func(Progress)

	maxExtents int // tests: a lower cap than MaxExtents
}

// CheckPieceLength returns an error unless n is a power of two from
// 256 KiB to 64 MiB.
func CheckPieceLength(n int64) error {
	if n < MinPieceLength || n > MaxPieceLength || n&(n-1) != 0 {
		return fmt.Errorf("piece size %s: want a power of two from %s to %s, or leave it out for the default by image size",
			bytesize.Format(n), bytesize.Format(MinPieceLength), bytesize.Format(MaxPieceLength))
	}
	return nil
}

// Create hashes the sources in parallel and returns the image torrent.
// Missing or unreadable sources are errors before any hashing starts.
func Create(ctx context.Context, log *slog.Logger, cfg CreateConfig) (*Image, error) {
	if len(cfg.Sources) == 0 {
		return nil, fmt.Errorf("no sources: name at least one image file, disk or partition")
	}
	if cfg.PieceLength != 0 {
		if err := CheckPieceLength(cfg.PieceLength); err != nil {
			return nil, err
		}
	}
	if cfg.Parts != nil && len(cfg.Parts) != len(cfg.Sources) {
		return nil, fmt.Errorf("%d layout entries for %d sources", len(cfg.Parts), len(cfg.Sources))
	}
	var devs []*Device
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	maxExt := cfg.maxExtents
	if maxExt <= 0 {
		maxExt = MaxExtents
	}
	info := infoDict{Name: cfg.Name, Layout: &Layout{Table: cfg.Table}}
	// What to read of each source, all decided before hashing starts but
	// the zero runs, which are found while hashing.
	type plan struct {
		src    string
		d      *Device
		part   PartInfo
		length int64 // bytes shipped; for a zero scan, known after it
		zeros  bool  // scan for zero runs (scanZeros)
	}
	var plans []plan
	var bound, total int64 // most bytes the torrent can hold; bytes to read
	for i, src := range cfg.Sources {
		d, err := OpenSource(src)
		if err != nil {
			return nil, err
		}
		devs = append(devs, d)
		if d.Size == 0 {
			return nil, fmt.Errorf("source %s is empty: nothing to image", src)
		}
		var p PartInfo
		if cfg.Parts != nil {
			p = cfg.Parts[i]
		}
		if p.Number == 0 && p.Start == 0 {
			p.Number, p.Start = blockdev.PartitionOf(d.File)
		}
		if p.Number == 0 && len(cfg.Sources) > 1 {
			p.Number = i + 1
		}
		if p.Size == 0 {
			p.Size = d.Size
		}
		if p.Size < d.Size {
			return nil, fmt.Errorf("source %s is %s but its partition is given as %s", src, bytesize.Format(d.Size), bytesize.Format(p.Size))
		}
		pl := plan{src: src, d: d, length: d.Size}
		if !cfg.Raw {
			m, err := usedMap(log, src, d, maxExt)
			if err != nil {
				return nil, err
			}
			switch es := m.Extents; {
			case m.Kind == usedmap.Unknown:
				pl.zeros = true
			case len(es) > 0 && (len(es) > 1 || es[0].Len < d.Size):
				p.Extents, p.Gaps, p.Filesystem = make(Extents, len(es)), GapsFree, m.Kind
				for j, e := range es {
					p.Extents[j] = Extent(e)
				}
				pl.length = m.Used()
			}
		}
		pl.part = p
		total += pl.length
		if pl.zeros {
			// The piece size is picked before the zero runs are found:
			// by what the source holds outside its holes.
			n, err := dataBytes(d.File, d.Size)
			if err != nil {
				return nil, fmt.Errorf("source %s: find its holes: %w", src, err)
			}
			bound += max(n, min(d.Size, ZeroBlock))
		} else {
			bound += pl.length
		}
		plans = append(plans, pl)
	}
	if info.Name == "" {
		info.Name = filepath.Base(cfg.Sources[0])
	}
	if cfg.PieceLength == 0 {
		cfg.PieceLength = PieceLengthFor(bound)
	}
	info.PieceLength = cfg.PieceLength
	log.Info("hashing image", "name", info.Name, "read", bytesize.Format(total),
		"piece_size", bytesize.Format(cfg.PieceLength))

	var read atomic.Int64
	stop := ReportEvery(ctx, 500*time.Millisecond, func() {
		if cfg.Progress != nil {
			cfg.Progress(Progress{State: StateHashing, Total: total, Done: read.Load()})
		}
	})
	start := time.Now()
	pool := newHashPool(cfg.PieceLength, cfg.Workers)
	closed := false
	defer func() {
		if !closed {
			pool.close()
		}
	}()
	asm := newAssembler(pool)
	add := func(n int64) { read.Add(n) }
	var err error
	for i := range plans {
		pl := &plans[i]
		if !pl.zeros {
			if err = asm.readFrom(ctx, OnExtents(pl.d, pl.part.Extents), 0, pl.length, add); err != nil {
				err = fmt.Errorf("source %s: %w", pl.src, err)
				break
			}
			continue
		}
		var z zeroScan
		if z, err = scanZeros(ctx, asm, pl.d.File, pl.d.Size, maxExt, add); err != nil {
			err = fmt.Errorf("source %s: %w", pl.src, err)
			break
		}
		asm, pl.length = z.out, z.length
		if z.extents != nil {
			pl.part.Extents, pl.part.Gaps = z.extents, GapsZero
		}
		logZeros(log, pl.src, pl.d.Size, z)
	}
	if err == nil {
		err = asm.finish(ctx)
	}
	pool.close()
	closed = true
	stop()
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", info.Name, err)
	}
	info.Pieces = asm.pieces()
	for _, pl := range plans {
		info.Layout.Parts = append(info.Layout.Parts, pl.part)
		name := filepath.Base(pl.src)
		if pl.part.Number > 0 {
			name = fmt.Sprintf("p%d-%s", pl.part.Number, name)
		}
		info.Files = append(info.Files, fileEntry{Length: pl.length, Path: []string{name}})
	}
	el := time.Since(start)
	log.Info("hashed image", "name", info.Name, "size", bytesize.Format(asm.n), "pieces", len(info.Pieces)/sha1.Size,
		"took", el.Round(time.Millisecond), "rate", bytesize.Format(int64(float64(total)/max(el.Seconds(), 1e-9)))+"/s")

	infoBytes, err := bencode.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode info: %w", err)
	}
	mi := &metainfo.MetaInfo{InfoBytes: infoBytes, CreationDate: time.Now().Unix(), CreatedBy: "pxeswarm " + version.String()}
	if len(cfg.Trackers) > 0 {
		mi.Announce = cfg.Trackers[0]
		mi.AnnounceList = metainfo.AnnounceList{cfg.Trackers}
	}
	mi.UrlList = cfg.WebSeeds
	data, err := bencode.Marshal(mi)
	if err != nil {
		return nil, fmt.Errorf("encode torrent: %w", err)
	}
	return Parse(data)
}

// usedMap reads which bytes of source d its filesystem uses, merged to at
// most MaxExtents extents, and logs what it found. A filesystem it does
// not know maps whole; a volume it must not copy by its bitmaps
// (hibernated, not cleanly shut down, BitLocker, damaged) is an error that
// says what to do.
func usedMap(log *slog.Logger, src string, d *Device, maxExtents int) (usedmap.Map, error) {
	m, err := usedmap.Detect(d, d.Size)
	if err != nil {
		return m, fmt.Errorf("source %s: %w (or make the image with --raw to ship every byte as it is)", src, err)
	}
	m = m.Capped(maxExtents)
	if m.Kind == usedmap.Unknown {
		log.Info("source: no filesystem pxeswarm reads: looking for zero runs while hashing", "source", src, "size", bytesize.Format(d.Size))
	} else {
		log.Info("source: "+m.String(), "source", src)
	}
	return m, nil
}

// logZeros says what zero detection found in a source of size bytes.
func logZeros(log *slog.Logger, src string, size int64, z zeroScan) {
	attrs := []any{"source", src, "zero_runs", bytesize.Format(z.zero), "holes_skipped", bytesize.Format(z.holes)}
	if z.extents == nil {
		log.Info(fmt.Sprintf("source: unknown filesystem, %s in zero runs of %s or more (under 1/%d): shipping every byte",
			bytesize.Format(z.zero), bytesize.Format(MinZeroRun), zeroShare), attrs...)
		return
	}
	msg := "source: " + ZeroSummary(z.length, size, len(z.extents))
	if z.capped {
		msg += fmt.Sprintf(" (merged down to %d extents and read again)", len(z.extents))
	}
	log.Info(msg, attrs...)
}

// ZeroSummary is the one-line summary of a part made by zero detection,
// for logs and consoles: "unknown filesystem: 12.3MiB non-zero of 1GiB,
// 14 extents; zero runs are zeroed on targets".
func ZeroSummary(length, size int64, extents int) string {
	return fmt.Sprintf("unknown filesystem: %s non-zero of %s, %d extents; zero runs are zeroed on targets",
		bytesize.Format(length), bytesize.Format(size), extents)
}
