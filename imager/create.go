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
	// bytes the filesystem uses (a used-block part, see OnExtents), and
	// any other source ships whole.
	Raw bool
	// Workers hashing in parallel; 0 means one per CPU.
	Workers int
	// Progress, if set, is called about twice a second while hashing.
	Progress func(Progress)
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
	info := infoDict{Name: cfg.Name, Layout: &Layout{Table: cfg.Table}}
	var parts []Part
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
		length := d.Size
		if !cfg.Raw {
			m, err := usedMap(log, src, d)
			if err != nil {
				return nil, err
			}
			if es := m.Extents; len(es) > 0 && (len(es) > 1 || es[0].Len < d.Size) {
				p.Extents, p.Gaps, p.Filesystem = make(Extents, len(es)), GapsFree, m.Kind
				for j, e := range es {
					p.Extents[j] = Extent(e)
				}
				length = m.Used()
			}
		}
		info.Layout.Parts = append(info.Layout.Parts, p)
		name := filepath.Base(src)
		if p.Number > 0 {
			name = fmt.Sprintf("p%d-%s", p.Number, name)
		}
		info.Files = append(info.Files, fileEntry{Length: length, Path: []string{name}})
		parts = append(parts, Part{RW: OnExtents(d, p.Extents), Length: length})
	}
	if info.Name == "" {
		info.Name = filepath.Base(cfg.Sources[0])
	}
	sp := newSpan(parts)
	if cfg.PieceLength == 0 {
		cfg.PieceLength = PieceLengthFor(sp.length)
	}
	info.PieceLength = cfg.PieceLength
	n := int((sp.length + cfg.PieceLength - 1) / cfg.PieceLength)
	info.Pieces = make([]byte, n*sha1.Size)
	log.Info("hashing image", "name", info.Name, "size", bytesize.Format(sp.length),
		"pieces", n, "piece_size", bytesize.Format(cfg.PieceLength))

	var hashed atomic.Int64
	stop := ReportEvery(ctx, 500*time.Millisecond, func() {
		if cfg.Progress != nil {
			cfg.Progress(Progress{State: StateHashing, Total: sp.length, Done: hashed.Load()})
		}
	})
	start := time.Now()
	err := hashPieces(ctx, sp, sp.length, cfg.PieceLength, cfg.Workers, &hashed, func(i int, sum [sha1.Size]byte) {
		copy(info.Pieces[i*sha1.Size:], sum[:])
	})
	stop()
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", info.Name, err)
	}
	el := time.Since(start)
	log.Info("hashed image", "name", info.Name, "took", el.Round(time.Millisecond),
		"rate", bytesize.Format(int64(float64(sp.length)/max(el.Seconds(), 1e-9)))+"/s")

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
func usedMap(log *slog.Logger, src string, d *Device) (usedmap.Map, error) {
	m, err := usedmap.Detect(d, d.Size)
	if err != nil {
		return m, fmt.Errorf("source %s: %w (or make the image with --raw to ship every byte as it is)", src, err)
	}
	m = m.Capped(MaxExtents)
	if m.Kind == usedmap.Unknown {
		log.Info("source: no filesystem pxeswarm reads: shipping every byte", "source", src, "size", bytesize.Format(d.Size))
	} else {
		log.Info("source: "+m.String(), "source", src)
	}
	return m, nil
}
