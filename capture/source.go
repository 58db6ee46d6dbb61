// Package capture is an image capture's way back to the server: the
// uploader's side. It opens a golden disk read-only, reads its partition
// table and each partition's used map, describes them in a
// protocol.Manifest, and streams the used bytes to the server with
// resume after a dropped connection.
//
// It owns:
//   - [Open]: the disk (never opened for writing), the refusals (a
//     partition mounted read-write, a hibernated or dirty NTFS, a
//     BitLocker volume: each with what to do), the manifest, and the
//     packed stream of used bytes (parts in order, extents in order) as
//     an io.ReaderAt;
//   - [Client]: the HTTP calls of a capture (create with the admin token;
//     manifest, data and finish with the capture's upload secret), the
//     tus-like resume of the data (the server says its offset, the client
//     sends from there), bounded retries with back-off, progress;
//   - [Config.Run]: all of it in order, for `pxeswarm capture` (the agent
//     will call Open and Client itself with the secret its plan carries).
//
// It does not own which bytes a filesystem uses (package usedmap), what
// a partition table holds (package partition), or what the server does
// with the bytes (package pxe: it re-hashes them and makes the torrent;
// nothing the uploader says about the data is trusted).
package capture

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"

	"github.com/pxeswarm/pxeswarm/imager"
	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/partition"
	"github.com/pxeswarm/pxeswarm/partition/blockdev"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/usedmap"
)

// ErrMounted: a partition of the disk is mounted read-write.
var ErrMounted = errors.New("mounted read-write")

// Options says how to read a disk.
type Options struct {
	// Raw sends every byte of every partition; no used maps are read, so
	// hibernated, dirty and BitLocker volumes are not refused.
	Raw bool
	// Force captures a disk whose partitions are mounted read-write. The
	// image may then be inconsistent (files changing while read).
	Force bool
}

// Source is an open disk and what will be sent of it.
type Source struct {
	Path     string
	Manifest protocol.Manifest
	// Used is, per part, the used map read (Kind Unknown when sent whole).
	Used []usedmap.Map

	f      *os.File
	parts  []io.ReaderAt // each part's packed bytes
	starts []int64       // stream offset of each part
	total  int64
}

// Open opens the disk at path (a whole disk, a partition or an image
// file) read-only and works out what to send: with a GPT or MBR, each
// partition; without, the whole disk as one part. Each part whose
// filesystem usedmap reads sends only its used extents (at most
// imager.MaxExtents, merged across the smallest gaps); any other sends
// whole.
func Open(path string, opt Options, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// os.Open: O_RDONLY. The golden disk is never opened for writing.
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open disk %s: %w", path, err)
	}
	s, err := open(f, path, opt, log)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func open(f *os.File, path string, opt Options, log *slog.Logger) (*Source, error) {
	dev, err := blockdev.Describe(f, path)
	if err != nil {
		return nil, err
	}
	if dev.Size == 0 {
		return nil, fmt.Errorf("disk %s is empty: nothing to capture", path)
	}
	sector := 512
	if dev.Block {
		if _, sector, err = blockdev.Geometry(f); err != nil {
			return nil, fmt.Errorf("disk %s: %w", path, err)
		}
		if mounts, err := rwMounts(f); err != nil {
			return nil, fmt.Errorf("disk %s: looking for its mounts: %w", path, err)
		} else if len(mounts) > 0 && !opt.Force {
			return nil, fmt.Errorf("%w: disk %s is mounted read-write (%s): files change while it is read, so the image would be inconsistent: unmount it, or remount it read-only (mount -o remount,ro MOUNTPOINT), and capture again; --force captures it anyway",
				ErrMounted, path, mounts[0])
		} else if len(mounts) > 0 {
			log.Warn("capture: the disk is mounted read-write; capturing anyway (--force): the image may be inconsistent", "disk", path, "mounts", mounts)
		}
	}
	s := &Source{Path: path, f: f, Manifest: protocol.Manifest{DiskSize: dev.Size, Raw: opt.Raw}}
	// A filesystem that starts at byte 0 (a "superfloppy", or a
	// partition given as the disk) is no table: FAT and NTFS boot sectors
	// end in 55 AA like an MBR, and their boot code would read as one.
	var tab *partition.Table
	if m, derr := usedmap.Detect(f, dev.Size); derr != nil || m.Kind != usedmap.Unknown {
		err = partition.ErrNoTable
	} else {
		tab, err = partition.ReadTable(f, dev.Size, sector)
	}
	switch {
	case errors.Is(err, partition.ErrNoTable):
		s.Manifest.Parts = []protocol.CapturePart{{Number: 0, Start: 0, Size: dev.Size}}
	case err != nil:
		return nil, fmt.Errorf("disk %s: partition table: %w", path, err)
	default:
		s.Manifest.Table = tab.Kind
		for _, p := range tab.Partitions {
			if p.Size <= 0 {
				continue
			}
			s.Manifest.Parts = append(s.Manifest.Parts, protocol.CapturePart{Number: p.Number, Start: p.Start, Size: p.Size,
				Type: p.Type, Label: p.Label, GUID: p.GUID})
		}
		sort.Slice(s.Manifest.Parts, func(i, j int) bool { return s.Manifest.Parts[i].Start < s.Manifest.Parts[j].Start })
		if len(s.Manifest.Parts) == 0 {
			return nil, fmt.Errorf("disk %s has a %s partition table without partitions: nothing to capture", path, tab.Kind)
		}
	}
	for i := range s.Manifest.Parts {
		p := &s.Manifest.Parts[i]
		r := io.NewSectionReader(f, p.Start, p.Size)
		m := usedmap.Whole(p.Size)
		if !opt.Raw {
			if m, err = usedmap.Detect(r, p.Size); err != nil {
				return nil, fmt.Errorf("disk %s, %s: %w (or capture it with --raw to send every byte as it is)", path, partName(*p), err)
			}
			m = m.Capped(imager.MaxExtents)
		}
		es := m.Extents
		if m.Kind != usedmap.Unknown && len(es) > 0 && (len(es) > 1 || es[0].Len < p.Size) {
			p.Filesystem = m.Kind
			p.Extents = make([][2]int64, len(es))
			for j, e := range es {
				p.Extents[j] = [2]int64{e.Off, e.Len}
			}
			log.Info("capture: "+m.String(), "disk", path, "part", partName(*p))
		} else {
			m = usedmap.Whole(p.Size)
			log.Info("capture: sending every byte", "disk", path, "part", partName(*p), "size", bytesize.Format(p.Size), "raw", opt.Raw)
		}
		s.Used = append(s.Used, m)
		s.parts = append(s.parts, imager.OnExtents(readOnly{r}, imager.ExtentsOf(p.Extents)))
		s.starts = append(s.starts, s.total)
		s.total += p.Length()
	}
	if err := s.Manifest.Check(); err != nil {
		return nil, fmt.Errorf("disk %s: %w (report this as a bug)", path, err)
	}
	return s, nil
}

func partName(p protocol.CapturePart) string {
	if p.Number == 0 {
		return "whole disk"
	}
	return fmt.Sprintf("partition %d", p.Number)
}

// readOnly is a ReaderAt that imager.OnExtents can take: it refuses
// every write.
type readOnly struct{ io.ReaderAt }

func (readOnly) WriteAt([]byte, int64) (int, error) {
	return 0, errors.New("capture: the golden disk is read-only")
}

// Total is the stream's length: the bytes that will be sent.
func (s *Source) Total() int64 { return s.total }

// ReadAt reads the packed stream: each part's extents in order, parts in
// order.
func (s *Source) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off > s.total {
		return 0, fmt.Errorf("capture: offset %d outside the %d-byte stream", off, s.total)
	}
	done := 0
	for done < len(b) && off+int64(done) < s.total {
		at := off + int64(done)
		i := sort.Search(len(s.starts), func(i int) bool { return s.starts[i] > at }) - 1
		end := s.total
		if i+1 < len(s.starts) {
			end = s.starts[i+1]
		}
		n := int(min(int64(len(b)-done), end-at))
		got, err := s.parts[i].ReadAt(b[done:done+n], at-s.starts[i])
		done += got
		if err != nil && !(errors.Is(err, io.EOF) && got == n) {
			return done, fmt.Errorf("capture: read %s: %w", s.Path, err)
		}
	}
	if done < len(b) {
		return done, io.EOF
	}
	return done, nil
}

// Close closes the disk.
func (s *Source) Close() error { return s.f.Close() }
